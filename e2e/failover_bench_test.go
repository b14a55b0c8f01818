//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// failoverTrials is how many times BenchmarkFailover repeats each case unless
// MCNET_FAILOVER_TRIALS says otherwise.
const failoverTrials = 10

// apiCut is how long each API-server cut of BenchmarkFailover lasts. The target is
// stated for a 60 s cut; ten of those would take the benchmark past half an hour on
// their own, so each trial cuts for 10 s: still ten Lease durations and three
// GatewayExpiry spans, long enough for anything that expires on a missed renewal to
// have expired.
const apiCut = 10 * time.Second

// cableLink is the cable's link on an active gateway node, per driver (the default
// dataplane.Config.LinkPrefix, "mcnet", as the rendered gateways run it).
var cableLink = map[mcnetv1.CableDriver]string{mcnetv1.CableVXLAN: "mcnet-vx", mcnetv1.CableWireGuard: "mcnet-wg"}

// BenchmarkFailover measures what losing a cluster's active gateway costs the traffic
// that crosses it, on three clusters of three nodes (two gateways, one worker)
// preferring VXLAN, VXLAN and WireGuard: the first reaches the second through VXLAN
// and the third through WireGuard. A pod on the first cluster's worker pings a pod on
// each other cluster's worker every 10 ms for the whole run. Each case runs
// MCNET_FAILOVER_TRIALS times (default failoverTrials); between trials the broken
// node comes back, every gateway of the cluster renews its heartbeat, every workload
// is ready and every connection of the fleet is connected again.
//
//   - sigkill and poweroff, per driver: the far cluster's active gateway process is
//     SIGKILLed, or its node powered off. The figure is the longest gap between echo
//     replies from the fault until the standby carries the stream: its cable link's rx
//     and tx packet counters (ip -s link on its node) each move by at least 90% of the
//     replies the stream got over a second. A trial whose standby does not carry the
//     stream within a minute fails the benchmark. (A VXLAN cable lives in the kernel:
//     after a SIGKILL the dead process's link may forward on, so replies alone prove
//     nothing.)
//   - apicut: the VXLAN cluster's API server stopped for apiCut. Failovers are the
//     gateway Lease's transitions, flaps the times another cluster's active gateway was
//     seen with its connection to the cut cluster not connected; and the longest gap.
//   - dns: both gateway nodes of the VXLAN cluster powered off at once; the figure is
//     the time until the first cluster's clusterset DNS (one of its replicas, asked
//     every 100 ms) stops answering the dead cluster's pod.
//
// p50 and p99 are nearest rank, so over ten trials p99 is the maximum. The targets of
// issue 17 (sigkill p99 ≤ 1 s, poweroff p99 ≤ 2 s, dns p99 ≤ 3 s, apicut 0 failovers and
// 0 flaps) are printed beside the figures, not enforced.
func BenchmarkFailover(b *testing.B) {
	labtest.RequireRoot(b)
	trials := failoverTrials
	if s := os.Getenv("MCNET_FAILOVER_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("MCNET_FAILOVER_TRIALS=%q: want a positive number of trials", s)
		}
		trials = n
	}
	// The figures are printed; the loop's own time means nothing.
	for b.Loop() {
		ctx := b.Context()
		l := startConnected(b, connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard), 3)
		c1, c2, c3 := l.Clusters()[0], l.Clusters()[1], l.Clusters()[2]
		servers, clients := serveOnWorkers(b, l.Lab)
		streams := map[string]*echoStream{}
		for _, c := range []*lab.Cluster{c2, c3} {
			streams[c.Name] = startEchoStream(b, clients[c1.Name], servers[c.Name])
		}
		faults := []gatewayFault{
			{name: "sigkill", what: "SIGKILL of the active gateway", target: time.Second,
				inject: func(ctx context.Context, n *lab.Node) error { return n.Cluster.Kill(ctx, "mcnet-gateway", n.Name) },
				repair: func(context.Context, *lab.Node) error { return nil }, // the kubelet restarts it
			},
			{name: "poweroff", what: "power-off of the active gateway node", target: 2 * time.Second,
				inject: func(ctx context.Context, n *lab.Node) error { return n.SetDown(ctx, true) },
				repair: func(ctx context.Context, n *lab.Node) error { return n.SetDown(ctx, false) },
			},
		}
		for _, far := range []struct {
			c      *lab.Cluster
			driver mcnetv1.CableDriver
		}{{c2, mcnetv1.CableVXLAN}, {c3, mcnetv1.CableWireGuard}} {
			for _, f := range faults {
				var gaps, repairGaps []time.Duration
				failed := 0
				for trial := range trials {
					gap, repairGap, err := failoverTrial(ctx, l, far.c, streams[far.c.Name], cableLink[far.driver], f)
					_, notCarried := err.(errNotCarried)
					switch {
					case notCarried:
						failed++
						b.Errorf("%s %s trial %d: %v", f.name, far.driver, trial+1, err)
					case err != nil:
						b.Fatalf("%s %s trial %d: %v", f.name, far.driver, trial+1, err)
					default:
						gaps = append(gaps, gap)
						fmt.Printf("failover: %s (%s) trial %d: gap %.3f s; longest gap while the node came back %.3f s\n",
							f.what, far.driver, trial+1, gap.Seconds(), repairGap.Seconds())
					}
					repairGaps = append(repairGaps, repairGap)
				}
				reportGaps(b, f.name+"-"+string(far.driver), fmt.Sprintf("%s (%s, %s)", f.what, far.c.Name, far.driver), gaps, failed, f.target)
				fmt.Printf("failover: %s (%s): longest gap while the node came back, per trial: %v\n", f.what, far.driver, round(repairGaps))
			}
		}
		apiCuts(b, l, c2, streams[c2.Name], cableLink[mcnetv1.CableVXLAN], trials)
		dnsDropouts(b, l, c1, c2, servers, clients[c1.Name], trials)
	}
}

// gatewayFault breaks a cluster's active gateway node and repairs it.
type gatewayFault struct {
	// name is the fault in metric names; what says it in words.
	name, what string
	// target is the bound for the p99 gap.
	target         time.Duration
	inject, repair func(ctx context.Context, n *lab.Node) error
}

// errNotCarried is a trial whose standby never carried the stream.
type errNotCarried struct{ err error }

func (e errNotCarried) Error() string {
	return "the standby does not carry the stream: " + e.err.Error()
}

// failoverTrial breaks c's active gateway node with f and returns the longest gap in s
// from then until c's other gateway carries s on its cable link dev, and the longest
// gap from then until f is repaired and c has settled. A standby that does not carry
// s within a minute is an errNotCarried, returned once c has settled all the same.
func failoverTrial(ctx context.Context, l *connectedLab, c *lab.Cluster, s *echoStream, dev string, f gatewayFault) (gap, repairGap time.Duration, err error) {
	holder, err := leaseHolder(ctx, c)
	if err != nil {
		return 0, 0, err
	}
	active := c.Node(holder)
	var standby *lab.Node
	for _, n := range c.Gateways() {
		if n.Name != holder {
			standby = n
		}
	}
	if active == nil || standby == nil {
		return 0, 0, fmt.Errorf("cluster %s: Lease holder %q, gateways %v: want the holder and one standby", c.Name, holder, c.Gateways())
	}
	// The fault hits the gateway that carries the stream.
	if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error { return carries(ctx, active, dev, s) }); err != nil {
		return 0, 0, fmt.Errorf("before the fault: %w", err)
	}
	start := time.Now()
	if err := f.inject(ctx, active); err != nil {
		return 0, 0, err
	}
	carryErr := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error { return carries(ctx, standby, dev, s) })
	carried := time.Now()
	gap = s.log.longestGap(start, carried)
	if err := f.repair(ctx, active); err != nil {
		return 0, 0, err
	}
	// Both gateways renew from here on: the broken one once it runs again.
	if err := settle(ctx, l, c, time.Now()); err != nil {
		return 0, 0, fmt.Errorf("after the repair: %w", err)
	}
	repairGap = s.log.longestGap(carried, time.Now())
	if carryErr != nil {
		return gap, repairGap, errNotCarried{carryErr}
	}
	return gap, repairGap, nil
}

// settle waits until c is whole again after a repair at since: every gateway of c
// renews its heartbeat (it runs and reaches its API server), every workload of c is
// ready, and every connection of the fleet is connected.
func settle(ctx context.Context, l *connectedLab, c *lab.Cluster, since time.Time) error {
	if err := lab.Eventually(ctx, 3*time.Minute, func(ctx context.Context) error { return gatewaysRenewed(ctx, c, since) }); err != nil {
		return err
	}
	if err := c.WaitWorkloads(ctx, 3*time.Minute); err != nil {
		return err
	}
	return l.waitConnected(ctx, 2*time.Minute)
}

// gatewaysRenewed checks that every gateway node of c has renewed its Gateway status
// after since.
func gatewaysRenewed(ctx context.Context, c *lab.Cluster, since time.Time) error {
	gws, err := gateways(ctx, c)
	if err != nil {
		return err
	}
	renewed := map[string]bool{}
	for _, g := range gws {
		renewed[g.Name] = g.Status.RenewTime != nil && g.Status.RenewTime.After(since)
	}
	for _, n := range c.Gateways() {
		if !renewed[n.Name] {
			return fmt.Errorf("gateway %s has not renewed its status since %s", n.Name, since.Format(time.StampMilli))
		}
	}
	return nil
}

// echoStream is ping(8) from one pod to another every 10 ms, for the whole benchmark,
// with the arrival of every echo reply in its log (ping's own receive timestamps, -D).
type echoStream struct {
	name string
	log  replyLog
}

// pingReply is a reply line of ping -D: "[1700000000.123456] 64 bytes from ...:
// icmp_seq=12 ...".
var pingReply = regexp.MustCompile(`^\[(\d+)\.(\d{6})\] \d+ bytes from .*icmp_seq=(\d+)`)

// startEchoStream starts pinging to from from; the test's cleanup stops it.
func startEchoStream(t testing.TB, from, to *lab.Pod) *echoStream {
	t.Helper()
	s := &echoStream{name: fmt.Sprintf("ping %s -> %s", from, to)}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cmd := from.Command(ctx, "ping", "-n", "-D", "-i", "0.01", to.IP.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m := pingReply.FindStringSubmatch(sc.Text())
			if m == nil {
				continue // the header, and errors such as "Destination Host Unreachable"
			}
			sec, _ := strconv.ParseInt(m[1], 10, 64)
			us, _ := strconv.ParseInt(m[2], 10, 64)
			seq, _ := strconv.Atoi(m[3])
			s.log.addSeq(time.Unix(sec, us*1000), seq)
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() { cancel(); <-done })
	if err := lab.Eventually(t.Context(), time.Minute, func(context.Context) error { return s.log.since(time.Now().Add(-time.Second)) }); err != nil {
		t.Fatalf("%s: %v", s.name, err)
	}
	return s
}

// carries checks that node n's cable link dev carried the stream over the next
// second: its rx and tx packet counters each moved by at least 90% of the echo replies
// the stream got meanwhile (each request came in through it, each reply went out),
// and the stream got at least half the replies it asked for.
func carries(ctx context.Context, n *lab.Node, dev string, s *echoStream) error {
	before, err := linkPackets(ctx, n, dev)
	if err != nil {
		return err
	}
	from := time.Now()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
	}
	to := time.Now()
	after, err := linkPackets(ctx, n, dev)
	if err != nil {
		return err
	}
	got := s.log.count(from, to)
	if got < 50 {
		return fmt.Errorf("%s: %d echo replies in %s", s.name, got, to.Sub(from).Round(time.Millisecond))
	}
	if after[0] < before[0] || after[1] < before[1] {
		return fmt.Errorf("%s's %s was created anew while it was read", n.Name, dev)
	}
	rx, tx := after[0]-before[0], after[1]-before[1]
	if want := uint64(got) * 9 / 10; rx < want || tx < want {
		return fmt.Errorf("%s's %s moved %d packets in and %d out while the stream got %d replies", n.Name, dev, rx, tx, got)
	}
	return nil
}

// linkPackets reads the rx and tx packet counters of link dev on node n.
func linkPackets(ctx context.Context, n *lab.Node, dev string) ([2]uint64, error) {
	out, err := n.Exec(ctx, "ip", "-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return [2]uint64{}, err
	}
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			TX struct {
				Packets uint64 `json:"packets"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil || len(links) != 1 {
		return [2]uint64{}, fmt.Errorf("ip -s -j link show dev %s on %s: %q: %v", dev, n.Name, out, err)
	}
	return [2]uint64{links[0].Stats.RX.Packets, links[0].Stats.TX.Packets}, nil
}

// reportGaps prints and reports p50, p99 and max of samples as name, beside the
// target for p99.
func reportGaps(b *testing.B, name, what string, samples []time.Duration, failed int, target time.Duration) {
	if len(samples) == 0 {
		fmt.Printf("failover: %s: no trial succeeded (%d failed)\n", what, failed)
		return
	}
	p50, p99 := percentiles(samples)
	most := slices.Max(samples)
	b.ReportMetric(p50.Seconds(), "s/"+name+"-p50")
	b.ReportMetric(p99.Seconds(), "s/"+name+"-p99")
	b.ReportMetric(most.Seconds(), "s/"+name+"-max")
	verdict := "met"
	if p99 > target {
		verdict = "MISSED"
	}
	fmt.Printf("failover: %s: %d trials, %d failed: p50 %.2f s, p99 %.2f s, max %.2f s (target p99 ≤ %s: %s); %v\n",
		what, len(samples)+failed, failed, p50.Seconds(), p99.Seconds(), most.Seconds(), target, verdict, round(samples))
}

// apiCuts stops c's API server for apiCut, trials times, and reports the
// gateway Lease's transitions (failovers), the times another cluster saw its
// connection to c leave connected (flaps), and the longest gap in s, from the cut
// until c has recovered.
func apiCuts(b *testing.B, l *connectedLab, c *lab.Cluster, s *echoStream, dev string, trials int) {
	ctx := b.Context()
	var others []*lab.Cluster
	for _, o := range l.Clusters() {
		if o != c {
			others = append(others, o)
		}
	}
	var gaps []time.Duration
	var failovers, flaps int
	for trial := range trials {
		before, err := c.Client.CoordinationV1().Leases(mcnetv1.SystemNamespace).Get(ctx, agent.LeaseName, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		holder := c.Node(ptrValue(before.Spec.HolderIdentity))
		if holder == nil {
			b.Fatalf("%s: gateway Lease held by %q", c.Name, ptrValue(before.Spec.HolderIdentity))
		}
		if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error { return carries(ctx, holder, dev, s) }); err != nil {
			b.Fatalf("before the cut: %v", err)
		}
		stop := watchConnection(ctx, others, c.Name)
		start := time.Now()
		if err := c.StopAPIServer(ctx); err != nil {
			b.Fatal(err)
		}
		// The outage is the fault injected, not a synchronisation: wait it out.
		select {
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		case <-time.After(apiCut):
		}
		if err := c.StartAPIServer(ctx); err != nil {
			b.Fatal(err)
		}
		back := time.Now()
		if err := settle(ctx, l, c, back); err != nil {
			b.Fatalf("after the cut: %v", err)
		}
		after, err := c.Client.CoordinationV1().Leases(mcnetv1.SystemNamespace).Get(ctx, agent.LeaseName, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		// The stream goes through the holder of the Lease after the cut, whoever it is.
		now := c.Node(ptrValue(after.Spec.HolderIdentity))
		if now == nil {
			b.Fatalf("%s: gateway Lease held by %q after the cut", c.Name, ptrValue(after.Spec.HolderIdentity))
		}
		if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error { return carries(ctx, now, dev, s) }); err != nil {
			b.Errorf("apicut trial %d: %v", trial+1, errNotCarried{err})
		}
		seen := stop()
		gap := s.log.longestGap(start, time.Now())
		moved := int(ptrValue(after.Spec.LeaseTransitions) - ptrValue(before.Spec.LeaseTransitions))
		if moved == 0 && now != holder {
			moved = 1
		}
		gaps, failovers, flaps = append(gaps, gap), failovers+moved, flaps+len(seen)
		fmt.Printf("failover: %s API-server cut in %s, trial %d: Lease %s -> %s (%d transitions), %d flaps %v, longest gap %.3f s, recovered %.1f s after the API server\n",
			apiCut, c.Name, trial+1, holder.Name, now.Name, moved, len(seen), seen, gap.Seconds(), time.Since(back).Seconds())
	}
	p50, p99 := percentiles(gaps)
	b.ReportMetric(float64(failovers), "apicut-failovers")
	b.ReportMetric(float64(flaps), "apicut-flaps")
	b.ReportMetric(p50.Seconds(), "s/apicut-gap-p50")
	b.ReportMetric(p99.Seconds(), "s/apicut-gap-p99")
	verdict := "met"
	if failovers > 0 || flaps > 0 {
		verdict = "MISSED"
	}
	fmt.Printf("failover: %s API-server cut in %s (%s): %d trials: %d failovers, %d flaps (target 0 and 0, for a 60 s cut: %s); longest gap p50 %.2f s, p99 %.2f s, max %.2f s; %v\n",
		apiCut, c.Name, mcnetv1.CableVXLAN, len(gaps), failovers, flaps, verdict, p50.Seconds(), p99.Seconds(), slices.Max(gaps).Seconds(), round(gaps))
}

// watchConnection polls, every 200 ms until stopped, the connection to cluster to
// that each of froms' active gateways reports, and returns each time one was seen
// leaving connected (or its cluster without an active gateway).
func watchConnection(ctx context.Context, froms []*lab.Cluster, to string) (stop func() []string) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan []string)
	go func() {
		var flaps []string
		up := map[string]bool{}
		for _, c := range froms {
			up[c.Name] = true
		}
		for ctx.Err() == nil {
			for _, c := range froms {
				why := "no connection"
				gw, err := activeGateway(ctx, c)
				if err != nil {
					why = err.Error()
				} else {
					for _, conn := range gw.Status.Connections {
						if conn.Cluster == to {
							why = ""
							if conn.Status != mcnetv1.Connected {
								why = fmt.Sprintf("%s: %s", conn.Status, conn.Message)
							}
						}
					}
				}
				if ctx.Err() != nil {
					break
				}
				if up[c.Name] && why != "" {
					flaps = append(flaps, fmt.Sprintf("%s %s -> %s %s", time.Now().Format("15:04:05.000"), c.Name, to, why))
				}
				up[c.Name] = why == ""
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
		done <- flaps
	}()
	return func() []string { cancel(); return <-done }
}

// dnsDropouts powers off every gateway node of dead at once, trials times, and
// reports the time until the clusterset DNS of asker (one of its replicas, asked from
// pod from) stops answering dead's server pod.
func dnsDropouts(b *testing.B, l *connectedLab, asker, dead *lab.Cluster, servers map[string]*lab.Pod, from *lab.Pod, trials int) {
	ctx := b.Context()
	const ns = "default"
	for _, c := range []*lab.Cluster{asker, dead} {
		exportHeadless(b, c, ns, "db", servers[c.Name].IP.String())
	}
	db := "db." + ns + ".svc.clusterset.local"
	gone := servers[dead.Name].IP.String()
	both := []string{servers[asker.Name].IP.String(), gone}
	slices.Sort(both)
	// Any of asker's replicas: only dead's nodes go down.
	var replica dnsReplica
	pods, err := asker.WorkloadPods(ctx, "mcnet-dns")
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range pods {
		if p.Ready && p.IP.IsValid() {
			replica = dnsReplica{from: from, pod: p}
		}
	}
	if replica.from == nil {
		b.Fatalf("%s: no ready mcnet-dns replica: %v", asker.Name, pods)
	}
	var dropouts []time.Duration
	var failures, starved int
	for trial := range trials {
		if err := replica.waitAnswers(ctx, db, both, 2*time.Minute); err != nil {
			b.Fatal(err)
		}
		rec := &dnsRecorder{}
		rctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { rec.run(rctx, replica, db) })
		if err := lab.Eventually(ctx, 30*time.Second, func(context.Context) error { return rec.answered(both) }); err != nil {
			stop()
			wg.Wait()
			b.Fatal(err)
		}
		start := time.Now()
		var pwg sync.WaitGroup
		errs := make([]error, len(dead.Gateways()))
		for i, n := range dead.Gateways() {
			pwg.Go(func() { errs[i] = n.SetDown(ctx, true) })
		}
		pwg.Wait()
		err := errors.Join(errs...)
		if err == nil {
			err = lab.Eventually(ctx, time.Minute, func(context.Context) error {
				if rec.firstWithout(start, gone).IsZero() {
					return fmt.Errorf("%s's DNS still answers %s's pod %s", asker.Name, dead.Name, gone)
				}
				return nil
			})
		}
		stop()
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
		took := rec.firstWithout(start, gone).Sub(start)
		dropouts = append(dropouts, took)
		failures, starved = failures+len(rec.failures), starved+rec.starved
		repaired := time.Now()
		for i, n := range dead.Gateways() {
			pwg.Go(func() { errs[i] = n.SetDown(ctx, false) })
		}
		pwg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
		if err := settle(ctx, l, dead, repaired); err != nil {
			b.Fatalf("after power-on: %v", err)
		}
		fmt.Printf("failover: %s dead (every gateway node powered off), trial %d: out of %s's DNS after %.3f s (%d asks, %d failed)\n",
			dead.Name, trial+1, asker.Name, took.Seconds(), rec.asks, len(rec.failures))
	}
	reportGaps(b, "dns-dropout", fmt.Sprintf("a dead cluster (%s) leaves %s's DNS", dead.Name, asker.Name), dropouts, 0, 3*time.Second)
	fmt.Printf("failover: DNS questions that failed over the dead-cluster trials: %d (and %d the machine was too busy to finish)\n", failures, starved)
}

// answered checks that the last answer the recorder saw is want.
func (r *dnsRecorder) answered(want []string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.changes); n > 0 && slices.Equal(r.changes[n-1].ips, want) {
		return nil
	}
	return fmt.Errorf("the DNS has not answered %v yet (%d asks, failures %v)", want, r.asks, r.failures)
}
