//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// remapFleet is five VXLAN clusters under one globalnet pool: c1, c2 and c5 built
// with the same pod and service CIDRs (so they are remapped), c3 and c4 with their
// own (so neither is): a mixed fleet, where the pair c1→c2 crosses two remaps and
// c3→c4 none, over paths of the same shape (worker pod, gateway, VXLAN cable,
// gateway, worker pod). c5 joins last.
func remapFleet() *mcnetv1.ClusterSet {
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN)
	cs.Spec.Globalnet = &mcnetv1.GlobalnetSpec{CIDR: overlapPool}
	for _, i := range []int{0, 1, 4} {
		cs.Spec.Clusters[i].PodCIDRs = []string{overlapPodCIDR}
		cs.Spec.Clusters[i].ServiceCIDRs = []string{overlapServiceCIDR}
	}
	return cs
}

// BenchmarkRemap measures what globalnet's 1:1 prefix remap costs a cross-cluster
// path: TCP throughput, the time to a connection's first answer (SYN to SYN-ACK, as
// the client's connect returns) and the round trip of a small message on an open
// connection, from a worker pod of c1 to one of c2 by its global address (source
// mapped at c1's gateway, destination at c2's) against the same measures from c3 to
// c4 by real addresses, in one mixed fleet of the first four clusters, interleaved
// trial by trial. Before measuring it checks each path is what it claims: the
// remapped server sees the client's global address, the plain one its real address.
// Target: remapped/plain throughput ≥ 0.95. Then c5, overlapping c1 and c2, joins
// (measureRemapJoin). Target: its remap programmed everywhere ≤ 1 s after its tunnel
// is connected.
func BenchmarkRemap(b *testing.B) {
	labtest.RequireRoot(b)
	ctx := b.Context()
	full := remapFleet()
	cs := full.DeepCopy()
	cs.Spec.Clusters = cs.Spec.Clusters[:4]
	opts, err := fleetlab.LabOptions(full, 2)
	if err != nil {
		b.Fatal(err)
	}
	lb := labtest.Start(b, opts)
	cl := lb.Clusters()
	l := &connectedLab{Lab: lb, fleet: cs, dir: filepath.Join(b.TempDir(), "fleet-repo"), only: cl[:4]}
	if err := installMembers(ctx, lb, cs, l.dir); err != nil {
		b.Fatal(err)
	}
	for _, c := range l.members() {
		if err := c.WaitWorkloads(ctx, 2*time.Minute); err != nil {
			b.Fatal(fmt.Errorf("components: %w", err))
		}
	}
	if err := l.waitConnected(ctx, time.Minute); err != nil {
		b.Fatal(err)
	}
	ranges := keptRanges(b, l.dir, cs.Name)
	for i, c := range l.members() {
		if _, ok := ranges[c.Name]; ok != (i < 2) {
			b.Fatalf("%s remapped=%v in the Fleet table, want %v: %v", c.Name, ok, i < 2, ranges)
		}
	}
	podCIDR := netip.MustParsePrefix(overlapPodCIDR)
	addrOf := func(p *lab.Pod) netip.Addr { // as the other clusters reach it
		if r, ok := ranges[p.Node.Cluster.Name]; ok {
			return mcnetv1.MapPrefix(p.IP, podCIDR, r.pod)
		}
		return p.IP
	}
	const port, echo, web = 5201, 7007, 8080
	type path struct {
		name     string
		cli, srv *lab.Pod
		gbps     []float64
		connect  []time.Duration
		rtt      []time.Duration
	}
	var paths []*path
	for _, p := range []struct {
		name     string
		from, to *lab.Cluster
	}{{"remapped", cl[0], cl[1]}, {"plain", cl[2], cl[3]}} {
		srv, err := l.AddPod(ctx, p.to.Workers()[0], lab.PodOptions{Name: "bench-server"})
		if err != nil {
			b.Fatal(err)
		}
		cli, err := l.AddPod(ctx, p.from.Workers()[0], lab.PodOptions{Name: "bench-client"})
		if err != nil {
			b.Fatal(err)
		}
		for _, serve := range []func() error{
			func() error { return srv.StartIperf3(ctx, port) },
			// Connects and round trips are timed against a TCP echo server: iperf3
			// re-arms its listener after each test.
			func() error { return srv.ServeEcho(ctx, echo) },
			func() error { return srv.ServeHTTP(ctx, web) },
		} {
			if err := serve(); err != nil {
				b.Fatal(err)
			}
		}
		url := "http://" + net.JoinHostPort(addrOf(srv).String(), strconv.Itoa(web)) + "/"
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			return getFrom(ctx, cli, srv, url, addrOf(cli))
		}); err != nil {
			b.Fatalf("%s path %s -> %s: %v", p.name, cli, srv, err)
		}
		paths = append(paths, &path{name: p.name, cli: cli, srv: srv})
	}

	const trials, connects, rounds = 5, 20, 200
	for range b.N {
		for i := range trials {
			// Alternate which path goes first, so neither always follows the other.
			order := slices.Clone(paths)
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				addr := addrOf(p.srv).String()
				out, err := p.cli.Exec(ctx, "iperf3", "-c", addr, "-p", strconv.Itoa(port), "-t", "3", "-O", "1", "-J")
				if err != nil {
					b.Fatalf("iperf3 %s %s -> %s: %v\n%s", p.name, p.cli, addr, err, out)
				}
				bps, err := iperfReceived(out)
				if err != nil {
					b.Fatal(err)
				}
				p.gbps = append(p.gbps, bps/1e9)
				for range connects {
					start := time.Now()
					c, err := p.cli.Dial(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(echo)))
					if err != nil {
						b.Fatalf("connect %s to %s: %v", p.name, addr, err)
					}
					p.connect = append(p.connect, time.Since(start))
					c.Close()
				}
				rtt, err := echoRounds(ctx, p.cli, net.JoinHostPort(addr, strconv.Itoa(echo)), rounds)
				if err != nil {
					b.Fatalf("%s round trips to %s: %v", p.name, addr, err)
				}
				p.rtt = append(p.rtt, rtt...)
			}
		}
	}
	med := func(v []float64) float64 { v = slices.Sorted(slices.Values(v)); return v[len(v)/2] }
	fmt.Printf("remap: %s -> %s (both remapped, by global address) against %s -> %s (neither), VXLAN cables, %d interleaved trials (iperf3 3 s, %d connects, %d round trips of 64 bytes each)\n",
		cl[0].Name, cl[1].Name, cl[2].Name, cl[3].Name, trials, connects, rounds)
	for _, p := range paths {
		c50, c99 := percentiles(p.connect)
		r50, r99 := percentiles(p.rtt)
		fmt.Printf("remap: %-8s %s -> %-15s throughput median %.2f Gbit/s (min %.2f, max %.2f); connect p50 %s p99 %s; round trip p50 %s p99 %s\n",
			p.name, p.cli.Node.Cluster.Name, addrOf(p.srv), med(p.gbps), slices.Min(p.gbps), slices.Max(p.gbps),
			c50.Round(time.Microsecond), c99.Round(time.Microsecond), r50.Round(time.Microsecond), r99.Round(time.Microsecond))
		b.ReportMetric(med(p.gbps), p.name+"-Gbit/s")
		b.ReportMetric(float64(c50.Microseconds()), p.name+"-connect-p50-µs")
		b.ReportMetric(float64(c99.Microseconds()), p.name+"-connect-p99-µs")
		b.ReportMetric(float64(r50.Microseconds()), p.name+"-rtt-p50-µs")
		b.ReportMetric(float64(r99.Microseconds()), p.name+"-rtt-p99-µs")
	}
	ratio := med(paths[0].gbps) / med(paths[1].gbps)
	r0, _ := percentiles(paths[0].rtt)
	r1, _ := percentiles(paths[1].rtt)
	b.ReportMetric(ratio, "remapped/plain-ratio")
	b.ReportMetric(float64((r0 - r1).Microseconds()), "remap-added-rtt-p50-µs")
	fmt.Printf("remap: remapped / plain throughput %.2f (target >= 0.95); the remap adds %s to a round trip (p50)\n", ratio, (r0 - r1).Round(time.Microsecond))

	measureRemapJoin(b, l, full, paths[0].cli)
}

// echoRounds opens one connection from cli to an echo server at addr and times n
// round trips of a 64-byte message on it.
func echoRounds(ctx context.Context, cli *lab.Pod, addr string, n int) ([]time.Duration, error) {
	c, err := cli.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	out := make([]time.Duration, 0, n)
	for i := range n {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
		if buf[0] != msg[0] {
			return nil, fmt.Errorf("echo answered %d, want %d", buf[0], msg[0])
		}
	}
	return out, nil
}

// measureRemapJoin lets the last cluster of full, which overlaps remapped members of
// the fleet l runs, join it: the new render (the Fleet table kept, so nobody else's
// ranges move) applied to the broker and every member in Flux's order, then the
// joiner's tree. From before the apply it polls, every joinPoll, each peer's Gateway
// objects for the joiner's connection turning connected (the tunnel as the peer's
// gateway reports it; the joiner's own gateway: all of its connections), and the
// kernel of every node that must change for the joiner's remap: each peer node's
// routes to the joiner's global pod and service ranges (and, on a gateway, both in
// the @remote-v4 set its keep-source and remap-out chains match), and the remap
// chains of the joiner's active gateway translating its own ranges. It prints, per
// node, when its part was programmed against when its cluster's gateway reported the
// tunnel connected, and reports the largest and median lag: one join, so one sample
// per node, at the polling interval's resolution. Then a pod of a remapped peer
// reaches a pod of the joiner by global address, seen at its own.
func measureRemapJoin(b *testing.B, l *connectedLab, full *mcnetv1.ClusterSet, cli *lab.Pod) {
	ctx := b.Context()
	const joinPoll = 100 * time.Millisecond
	joiner := l.Cluster(full.Spec.Clusters[len(full.Spec.Clusters)-1].Name)
	peers := l.members()
	if err := renderFor(l.Lab, full, l.dir); err != nil {
		b.Fatal(err)
	}
	ranges := keptRanges(b, l.dir, full.Name)
	jr, ok := ranges[joiner.Name]
	if !ok {
		b.Fatalf("the joining %s is not remapped in the Fleet table: %v", joiner.Name, ranges)
	}

	// Every poller records the first time its condition held; they run until it did
	// or pctx ends.
	pctx, stop := context.WithTimeout(ctx, 3*time.Minute)
	defer stop()
	var mu sync.Mutex
	seen := map[string]time.Time{}
	var wg sync.WaitGroup
	watch := func(key string, cond func(context.Context) bool) {
		wg.Go(func() {
			tick := time.NewTicker(joinPoll)
			defer tick.Stop()
			for {
				if cond(pctx) {
					mu.Lock()
					seen[key] = time.Now()
					mu.Unlock()
					return
				}
				select {
				case <-pctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	connectedKey := func(c *lab.Cluster) string { return "connected " + c.Name }
	for _, c := range append(slices.Clone(peers), joiner) {
		cc, err := client.New(c.Config, client.Options{Scheme: agent.Scheme()})
		if err != nil {
			b.Fatal(err)
		}
		want := []string{joiner.Name}
		if c == joiner {
			want = clusterNames(peers)
		}
		watch(connectedKey(c), func(ctx context.Context) bool {
			var list mcnetv1.GatewayList
			if err := cc.List(ctx, &list, client.InNamespace(mcnetv1.SystemNamespace)); err != nil {
				return false
			}
			for _, gw := range list.Items {
				if gw.Status.HAStatus != mcnetv1.HAActive {
					continue
				}
				n := 0
				for _, conn := range gw.Status.Connections {
					if slices.Contains(want, conn.Cluster) && conn.Status == mcnetv1.Connected {
						n++
					}
				}
				if n == len(want) {
					return true
				}
			}
			return false
		})
	}
	global := []string{jr.pod.String(), jr.svc.String()}
	var nodes []*lab.Node
	for _, c := range peers {
		for _, n := range c.Nodes {
			nodes = append(nodes, n)
			check := fmt.Sprintf(`r=$(ip -4 -o route show table %d) && for p in %s; do echo "$r" | grep -q "^$p " || exit 1; done`,
				dataplane.DefaultTable, strings.Join(global, " "))
			if slices.Contains(c.Gateways(), n) {
				check += fmt.Sprintf(` && nft get element inet mcnet remote-v4 '{ %s }' >/dev/null`, strings.Join(global, ", "))
			}
			watch(n.Name, func(ctx context.Context) bool {
				_, err := n.Exec(ctx, "sh", "-c", check)
				return err == nil
			})
		}
	}
	remapRules := []string{
		fmt.Sprintf("ip daddr %s dnat ip prefix to %s", jr.pod, overlapPodCIDR),
		fmt.Sprintf("ip saddr %s ip daddr @remote-v4 snat ip prefix to %s", overlapPodCIDR, jr.pod),
		fmt.Sprintf("ip daddr %s ip daddr set ip daddr", jr.svc),
		fmt.Sprintf("ip saddr %s ip daddr @remote-v4 ip saddr set ip saddr", overlapServiceCIDR),
	}
	for _, n := range joiner.Gateways() { // one, the active gateway (LabOptions' default)
		nodes = append(nodes, n)
		watch(n.Name, func(ctx context.Context) bool {
			out, err := n.Exec(ctx, "nft", "list", "table", "inet", "mcnet")
			return err == nil && !slices.ContainsFunc(remapRules, func(r string) bool { return !strings.Contains(out, r) })
		})
	}

	start := time.Now()
	l.fleet, l.only = full, nil
	if err := installMembers(ctx, l.Lab, full, l.dir); err != nil {
		b.Fatal(err)
	}
	applied := time.Since(start)
	if err := joiner.WaitWorkloads(ctx, 2*time.Minute); err != nil {
		b.Fatal(fmt.Errorf("components of %s: %w", joiner.Name, err))
	}
	if err := poll(ctx, 2*time.Minute, 200*time.Millisecond, l.connected); err != nil {
		b.Fatal(err)
	}
	if err := lab.Eventually(ctx, time.Minute, func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		var missing []string
		for _, n := range nodes {
			if _, ok := seen[n.Name]; !ok {
				missing = append(missing, n.Name)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s's remap (global %v) not programmed on %v", joiner.Name, global, missing)
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	stop()
	wg.Wait()

	fmt.Printf("remap join: %s (pods %s at %s, services %s at %s) joins %s; render and trees applied after %.2f s, polled every %s\n",
		joiner.Name, overlapPodCIDR, jr.pod, overlapServiceCIDR, jr.svc, strings.Join(clusterNames(peers), ", "), applied.Seconds(), joinPoll)
	var lags []time.Duration
	var last time.Time
	for _, n := range nodes {
		conn, ok := seen[connectedKey(n.Cluster)]
		if !ok {
			b.Fatalf("%s's gateway never reported the tunnel to %s connected", n.Cluster.Name, joiner.Name)
		}
		prog := seen[n.Name]
		last = later(last, prog)
		lag := prog.Sub(conn)
		lags = append(lags, lag)
		what := "routes and @remote-v4"
		if n.Cluster == joiner {
			what = "its remap chains"
		} else if !slices.Contains(n.Cluster.Gateways(), n) {
			what = "routes"
		}
		fmt.Printf("remap join:   %-22s %-22s programmed at %6.2f s, its gateway's tunnel connected at %6.2f s: %+.2f s\n",
			n.Name, what, prog.Sub(start).Seconds(), conn.Sub(start).Seconds(), lag.Seconds())
	}
	var lastConn time.Time
	for _, c := range peers {
		lastConn = later(lastConn, seen[connectedKey(c)])
	}
	p50, _ := percentiles(lags)
	worst := slices.Max(lags)
	fmt.Printf("remap join: programmed everywhere %.2f s after the apply, %+.2f s after the last peer's tunnel connected; per node, programmed minus connected: median %+.2f s, max %+.2f s (target <= 1 s); one join, one sample per node\n",
		last.Sub(start).Seconds(), last.Sub(lastConn).Seconds(), p50.Seconds(), worst.Seconds())
	b.ReportMetric(worst.Seconds(), "join-remap-after-connected-max-s")
	b.ReportMetric(p50.Seconds(), "join-remap-after-connected-p50-s")
	b.ReportMetric(last.Sub(start).Seconds(), "join-remap-everywhere-s")

	// The joined cluster works: a remapped peer's pod reaches a joiner pod by its
	// global address and is seen at its own.
	srv, err := l.AddPod(ctx, joiner.Workers()[0], lab.PodOptions{Name: "join-server"})
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.ServeHTTP(ctx, 8080); err != nil {
		b.Fatal(err)
	}
	podCIDR := netip.MustParsePrefix(overlapPodCIDR)
	addr := func(p *lab.Pod) netip.Addr { return mcnetv1.MapPrefix(p.IP, podCIDR, ranges[p.Node.Cluster.Name].pod) }
	url := "http://" + net.JoinHostPort(addr(srv).String(), "8080") + "/"
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		return getFrom(ctx, cli, srv, url, addr(cli))
	}); err != nil {
		b.Fatalf("%s -> %s after the join: %v", cli, srv, err)
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
