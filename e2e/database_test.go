//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// The example of docs/databases.md, as the suite runs it.
const (
	dbNamespace = "db"
	// dbPassword is the pg-auth Secret's password in the lab.
	dbPassword = "lab-password-not-secret"
	// pgStandbyName is the standby's application_name and slot (the manifests' STANDBY_NAME).
	pgStandbyName = "standby1"
)

// dbLab is a connected lab of three clusters running the example databases: an etcd
// member in each, the PostgreSQL primary and both writers in the second (two gateways:
// the faults hit it), the hot standby in the third. The first cluster holds the broker.
// mcnet is installed the GitOps way: the rendered tree is pushed to a Git server and
// each cluster's Flux applies it, so the fleet changes through Git during the load.
type dbLab struct {
	*connectedLab
	broker, primary, standby *lab.Cluster
	examples                 string
	git                      *gitopsLab
}

// databaseFleet is the suite's fleet: the primary's cluster prefers WireGuard, so the
// replication stream crosses a WireGuard pair; the other two talk VXLAN to each other.
func databaseFleet() *mcnetv1.ClusterSet {
	return connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableWireGuard, mcnetv1.CableVXLAN)
}

// startDatabaseLab brings the lab up (two nodes per cluster, three with two gateways in
// the primary's), installs the fleet, waits for every connection, and deploys the
// example's databases and writers the way docs/databases.md does.
func startDatabaseLab(t testing.TB) *dbLab { return startDatabaseLabWith(t, databaseFleet()) }

// startDatabaseLabWith is startDatabaseLab for another fleet of three clusters.
func startDatabaseLabWith(t testing.TB, cs *mcnetv1.ClusterSet) *dbLab {
	t.Helper()
	ctx := t.Context()
	root, rel := requireFlux(t)
	opts, err := fleetlab.LabOptions(cs, 2)
	if err != nil {
		t.Fatal(err)
	}
	opts.Clusters[1].Nodes, opts.Clusters[1].Gateways = 3, 2
	began := time.Now()
	l := labtest.Start(t, opts)
	t.Logf("lab up after %s", time.Since(began).Round(time.Second))
	// What a user does: render, push, bootstrap Flux in each cluster; then deliver the
	// broker credentials (out of band) and start the clusters' DNS with the clusterset
	// server block the overlays carry.
	g := startGitOps(t, l, rel)
	cs = cs.DeepCopy()
	mcnetv1.SetDefaults_ClusterSet(cs)
	cs.Spec.GitOps.RepoURL = g.repoURL
	rev := g.push(cs, "mcnet: the database fleet")
	for _, c := range l.Clusters() {
		g.bootstrap(c)
	}
	g.converge(cs, rev)
	for _, c := range l.Clusters() {
		if err := c.StartClusterDNS(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Flux applied the fleet and every cluster connected after %s", time.Since(began).Round(time.Second))
	cl := &connectedLab{Lab: l, fleet: cs, dir: g.worktree}
	d := &dbLab{connectedLab: cl, broker: l.Clusters()[0], primary: l.Clusters()[1], standby: l.Clusters()[2],
		examples: filepath.Join(root, "examples", "databases"), git: g}
	if err := d.deploy(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// etcdMember is the clusterset name of the etcd member in cluster c.
func etcdMember(c *lab.Cluster) string {
	return "etcd-0." + c.Name + ".etcd." + dbNamespace + ".svc.clusterset.local"
}

// deploy runs the guide's steps: in every cluster the namespace, the etcd-member
// ConfigMap and the etcd member; the pg-auth Secret where PostgreSQL runs, the primary,
// the standby, and the two writers in the primary's cluster.
func (d *dbLab) deploy(ctx context.Context) error {
	var initial, endpoints []string
	for _, c := range d.Clusters() {
		initial = append(initial, "etcd-0."+c.Name+"=http://"+etcdMember(c)+":2380")
		endpoints = append(endpoints, "http://"+etcdMember(c)+":2379")
	}
	for _, c := range d.Clusters() {
		// kubectl create namespace db
		// kubectl create configmap etcd-member -n db --from-literal=cluster=... ...
		if err := c.Apply(ctx, namespaceObject(dbNamespace)); err != nil {
			return err
		}
		cm := &corev1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: "etcd-member", Namespace: dbNamespace},
			Data: map[string]string{
				"cluster":         c.Name,
				"initial-cluster": strings.Join(initial, ","),
				"endpoints":       strings.Join(endpoints, ","),
			},
		}
		if _, err := c.Client.CoreV1().ConfigMaps(dbNamespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		if err := c.ApplyKustomization(ctx, filepath.Join(d.examples, "etcd")); err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	for _, c := range []*lab.Cluster{d.primary, d.standby} {
		// kubectl create secret generic pg-auth -n db --from-literal=password=...
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "pg-auth", Namespace: dbNamespace},
			StringData: map[string]string{"password": dbPassword},
		}
		if _, err := c.Client.CoreV1().Secrets(dbNamespace).Create(ctx, s, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
	}
	steps := []struct {
		c   *lab.Cluster
		dir string
	}{
		{d.primary, "postgresql/primary"},
		{d.standby, "postgresql/standby"},
		{d.primary, "postgresql/writer"},
		{d.primary, "etcd-writer"},
	}
	for _, s := range steps {
		if err := s.c.ApplyKustomization(ctx, filepath.Join(d.examples, filepath.FromSlash(s.dir))); err != nil {
			return fmt.Errorf("%s: %w", s.c.Name, err)
		}
	}
	// Both writers acknowledge writes: etcd has its quorum, the standby streams.
	if err := lab.Eventually(ctx, 4*time.Minute, func(ctx context.Context) error {
		var errs []error
		for _, w := range []string{"etcd-writer", "pg-writer"} {
			acks, err := d.acks(ctx, w)
			if err != nil {
				errs = append(errs, err)
			} else if len(acks) < 10 {
				errs = append(errs, fmt.Errorf("%s: %d acknowledged writes so far%s", w, len(acks), d.why(ctx)))
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		return err
	}
	return d.checkOffGateways(ctx)
}

// checkOffGateways checks that the example's pods keep off gateway nodes, as their
// affinity asks: a gateway fault must cost a tunnel failover, not a database member.
func (d *dbLab) checkOffGateways(ctx context.Context) error {
	var errs []error
	for _, c := range d.Clusters() {
		pods, err := c.Client.CoreV1().Pods(dbNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if n := c.Node(p.Spec.NodeName); n != nil && n.Gateway {
				errs = append(errs, fmt.Errorf("%s: pod %s runs on gateway node %s", c.Name, p.Name, n.Name))
			}
		}
	}
	return errors.Join(errs...)
}

// why describes the example's pods that do not run, for waiting messages.
func (d *dbLab) why(ctx context.Context) string {
	var b strings.Builder
	for _, c := range d.Clusters() {
		pods, err := c.Client.CoreV1().Pods(dbNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			continue
		}
		for _, p := range pods.Items {
			for _, st := range p.Status.ContainerStatuses {
				if !st.Ready {
					fmt.Fprintf(&b, "; %s/%s not ready (%s)", c.Name, p.Name, containerState(st))
				}
			}
		}
	}
	return b.String()
}

func containerState(st corev1.ContainerStatus) string {
	switch {
	case st.State.Waiting != nil:
		return st.State.Waiting.Reason + " " + st.State.Waiting.Message
	case st.State.Terminated != nil:
		return fmt.Sprintf("terminated %d %s, %d restarts", st.State.Terminated.ExitCode, st.State.Terminated.Reason, st.RestartCount)
	}
	return fmt.Sprintf("running, %d restarts", st.RestartCount)
}

func namespaceObject(name string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": name}}}
}

// ack is one write a writer printed as acknowledged.
type ack struct {
	n       int64
	at      time.Time
	latency time.Duration
}

// acks reads the acknowledged writes a writer pod (in the primary's cluster) printed.
func (d *dbLab) acks(ctx context.Context, pod string) ([]ack, error) {
	raw, err := d.primary.Client.CoreV1().Pods(dbNamespace).GetLogs(pod, &corev1.PodLogOptions{Container: "writer"}).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("logs of %s: %w", pod, err)
	}
	var out []ack
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			continue
		}
		n, err1 := strconv.ParseInt(f[1], 10, 64)
		ns, err2 := strconv.ParseInt(f[2], 10, 64)
		us, err3 := strconv.ParseInt(f[3], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%s printed %q: %w", pod, sc.Text(), err)
		}
		out = append(out, ack{n: n, at: time.Unix(0, ns), latency: time.Duration(us) * time.Microsecond})
	}
	return out, nil
}

// longestGap is the longest time without an acknowledged write around [from, to]: from
// the last ack before from to the first after it, between acks, and to to when nothing
// was acknowledged after the last.
func longestGap(acks []ack, from, to time.Time) time.Duration {
	prev := from
	for _, a := range acks {
		if !a.at.After(from) {
			prev = a.at
		}
	}
	var gap time.Duration
	for _, a := range acks {
		if !a.at.After(from) {
			continue
		}
		gap = max(gap, a.at.Sub(prev))
		if a.at.After(to) {
			return gap
		}
		prev = a.at
	}
	return max(gap, to.Sub(prev))
}

// waitWrites waits until both writers have acknowledged a write after since and the
// standby's replay lag is under 1 s, and returns the time the lag was first seen under
// 1 s, measured from since.
func (d *dbLab) waitWrites(ctx context.Context, since time.Time, timeout time.Duration) (time.Duration, error) {
	err := lab.Eventually(ctx, timeout, func(ctx context.Context) error {
		var errs []error
		for _, w := range []string{"etcd-writer", "pg-writer"} {
			acks, err := d.acks(ctx, w)
			if err != nil {
				errs = append(errs, err)
			} else if len(acks) == 0 || !acks[len(acks)-1].at.After(since) {
				errs = append(errs, fmt.Errorf("%s: no write acknowledged since %s", w, since.Format(time.TimeOnly)))
			}
		}
		return errors.Join(errs...)
	})
	if err != nil {
		return 0, err
	}
	var lag time.Duration
	err = poll(ctx, timeout, 200*time.Millisecond, func(ctx context.Context) error {
		r, err := d.replication(ctx)
		if err != nil {
			return err
		}
		if r.state != "streaming" || r.lag >= time.Second {
			return fmt.Errorf("standby %s, replay lag %s", r.state, r.lag)
		}
		lag = time.Since(since)
		return nil
	})
	return lag, err
}

// replicationRow is the primary's pg_stat_replication row of the standby.
type replicationRow struct {
	state, syncState, clientAddr string
	lag                          time.Duration
}

// psql runs one query in a PostgreSQL pod of the example through its local socket and
// returns the unaligned rows.
func psql(ctx context.Context, c *lab.Cluster, pod, query string) (string, error) {
	return psqlTimeout(ctx, c, pod, query, 20*time.Second)
}

// psqlTimeout is psql with a timeout of its own.
func psqlTimeout(ctx context.Context, c *lab.Cluster, pod, query string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := c.Exec(ctx, dbNamespace, pod, "postgres", "psql", "-qAtX", "-F", " ", "-h", "/tmp", "-U", "postgres", "-d", "postgres", "-c", query)
	return strings.TrimSpace(out), err
}

// replication reads the standby's replication state on the primary: its replay lag,
// or, while it is streaming without a recent replay to time, whether it has replayed
// everything written.
func (d *dbLab) replication(ctx context.Context) (replicationRow, error) {
	out, err := psql(ctx, d.primary, "pg-primary-0", "SELECT state, sync_state, host(client_addr), "+
		"CASE WHEN replay_lsn = pg_current_wal_lsn() THEN 0 ELSE COALESCE(EXTRACT(EPOCH FROM replay_lag), 1e6) END "+
		"FROM pg_stat_replication WHERE application_name = '"+pgStandbyName+"'")
	if err != nil {
		return replicationRow{}, err
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		return replicationRow{}, fmt.Errorf("no replication of %s on the primary (pg_stat_replication: %q)", pgStandbyName, out)
	}
	sec, err := strconv.ParseFloat(f[3], 64)
	if err != nil {
		return replicationRow{}, err
	}
	return replicationRow{state: f[0], syncState: f[1], clientAddr: f[2], lag: time.Duration(sec * float64(time.Second))}, nil
}

// etcdRange asks etcd's JSON gateway for key (or the range [key, end)) through a
// member, from the etcd writer's pod, linearizably.
func (d *dbLab) etcdRange(ctx context.Context, member *lab.Cluster, key, end string, keysOnly bool) (etcdRangeResponse, error) {
	req := map[string]any{"key": base64.StdEncoding.EncodeToString([]byte(key)), "keys_only": keysOnly}
	if end != "" {
		req["range_end"] = base64.StdEncoding.EncodeToString([]byte(end))
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := d.primary.Exec(ctx, dbNamespace, "etcd-writer", "writer", "curl", "-sf", "-m", "3", "http://"+etcdMember(member)+":2379/v3/kv/range", "-d", string(body))
	if err != nil {
		return etcdRangeResponse{}, err
	}
	var r etcdRangeResponse
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return r, fmt.Errorf("range through %s: %w: %q", member.Name, err, out)
	}
	return r, nil
}

type etcdRangeResponse struct {
	Kvs []struct {
		Key   []byte `json:"key"`
		Value []byte `json:"value"`
	} `json:"kvs"`
	Count string `json:"count"`
}

// counter reads the counter through a member.
func (d *dbLab) counter(ctx context.Context, member *lab.Cluster) (int64, error) {
	r, err := d.etcdRange(ctx, member, "counter", "", false)
	if err != nil {
		return 0, err
	}
	if len(r.Kvs) != 1 {
		return 0, fmt.Errorf("no counter through %s", member.Name)
	}
	return strconv.ParseInt(string(r.Kvs[0].Value), 10, 64)
}

// fault is one fault of the suite: inject it, then repair what a person would (power
// the node on, start the API server, plug the cable back).
type fault struct {
	name   string
	inject func(ctx context.Context) error
	hold   time.Duration
	repair func(ctx context.Context) error
	// during checks the system while the fault holds.
	during func(ctx context.Context, from time.Time) error
	// meanwhile, when set, runs beside the hold from the injection on (a second fault
	// inside the first); the repair waits for it.
	meanwhile func(ctx context.Context, from time.Time) error
	// gateway says the fault moves the primary's cluster's gateway role.
	gateway bool
}

// faultResult is what a fault cost the writers.
type faultResult struct {
	etcdGap, pgGap, lagUnder1s time.Duration
	// leaseMoved is how long the primary's cluster took to have another gateway hold
	// the Lease, for the gateway faults (0 when it did not move).
	leaseMoved time.Duration
}

// run injects f, holds it, repairs it and waits for writes and replication to recover.
func (d *dbLab) run(ctx context.Context, f fault) (faultResult, error) {
	old, _ := leaseHolder(ctx, d.primary)
	start := time.Now()
	if err := f.inject(ctx); err != nil {
		return faultResult{}, fmt.Errorf("%s: %w", f.name, err)
	}
	// Time the Lease's move beside the writers' gaps, which also wait for the remote
	// gateways, the tunnels and the databases' own reconnections.
	moved := make(chan time.Duration, 1)
	wctx, stopWatch := context.WithTimeout(ctx, time.Minute)
	defer stopWatch()
	go func() {
		var took time.Duration
		_ = poll(wctx, time.Minute, 50*time.Millisecond, func(ctx context.Context) error {
			h, err := leaseHolder(ctx, d.primary)
			if err != nil {
				return err
			}
			if h == old {
				return fmt.Errorf("%s still holds the Lease", old)
			}
			took = time.Since(start)
			return nil
		})
		moved <- took
	}()
	meanwhile := make(chan error, 1)
	if f.meanwhile != nil {
		go func() { meanwhile <- f.meanwhile(ctx, start) }()
	} else {
		meanwhile <- nil
	}
	if f.hold > 0 {
		select {
		case <-ctx.Done():
			return faultResult{}, ctx.Err()
		case <-time.After(f.hold):
		}
	}
	var errs []error
	errs = append(errs, <-meanwhile)
	if f.during != nil {
		errs = append(errs, f.during(ctx, start))
	}
	repaired := time.Now()
	if f.repair != nil {
		errs = append(errs, f.repair(ctx))
	}
	lag, err := d.waitWrites(ctx, repaired, 90*time.Second)
	if err != nil {
		errs = append(errs, fmt.Errorf("after %s: %w", f.name, err))
	}
	if err := errors.Join(errs...); err != nil {
		return faultResult{}, err
	}
	to := start.Add(lag + repaired.Sub(start))
	res := faultResult{lagUnder1s: lag}
	if f.gateway {
		res.leaseMoved = <-moved
	}
	stopWatch()
	for w, gap := range map[string]*time.Duration{"etcd-writer": &res.etcdGap, "pg-writer": &res.pgGap} {
		acks, err := d.acks(ctx, w)
		if err != nil {
			return res, err
		}
		*gap = longestGap(acks, start, to)
	}
	return res, nil
}

// gatewayKill is a SIGKILL of the active gateway in the primary's cluster.
func (d *dbLab) gatewayKill() fault {
	return fault{name: "SIGKILL of the active gateway", gateway: true, inject: func(ctx context.Context) error {
		holder, err := leaseHolder(ctx, d.primary)
		if err != nil {
			return err
		}
		return d.primary.Kill(ctx, "mcnet-gateway", holder)
	}, repair: func(ctx context.Context) error { return d.waitConnected(ctx, time.Minute) }}
}

// gatewayPowerOff powers the active gateway node of the primary's cluster off and, after
// hold, on again.
func (d *dbLab) gatewayPowerOff(hold time.Duration) fault {
	var node *lab.Node
	return fault{name: "power-off of the active gateway node", hold: hold, gateway: true,
		inject: func(ctx context.Context) error {
			holder, err := leaseHolder(ctx, d.primary)
			if err != nil {
				return err
			}
			if node = d.primary.Node(holder); node == nil {
				return fmt.Errorf("no node %s", holder)
			}
			// Where the cluster's controller runs decides how soon the broker learns the
			// new active gateway: it publishes the cluster's Endpoint there.
			pods, err := d.primary.Client.CoreV1().Pods(mcnetv1.SystemNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mcnet-controller"})
			if err != nil {
				return err
			}
			for _, p := range pods.Items {
				fmt.Printf("databases: powering off %s; %s's controller %s runs on %s\n", holder, d.primary.Name, p.Name, p.Spec.NodeName)
			}
			return node.SetDown(ctx, true)
		},
		repair: func(ctx context.Context) error {
			if err := node.SetDown(ctx, false); err != nil {
				return err
			}
			if err := d.primary.WaitWorkloads(ctx, 2*time.Minute); err != nil {
				return err
			}
			return d.waitConnected(ctx, time.Minute)
		}}
}

// brokerOutage stops the broker's API server for hold.
func (d *dbLab) brokerOutage(hold time.Duration) fault {
	return fault{name: "broker outage", hold: hold,
		inject: func(ctx context.Context) error { return d.broker.StopAPIServer(ctx) },
		repair: func(ctx context.Context) error { return d.broker.StartAPIServer(ctx) }}
}

// setBrokerWAN plugs every WAN cable of the broker's cluster in (up) or out.
func (d *dbLab) setBrokerWAN(ctx context.Context, up bool) error {
	var errs []error
	for _, n := range d.broker.Gateways() {
		errs = append(errs, n.SetWAN(ctx, up))
	}
	return errors.Join(errs...)
}

// quorumKeptSince checks that etcd acknowledged an increment after settled, while the
// broker's cluster was cut off: the other two clusters held the quorum.
func (d *dbLab) quorumKeptSince(ctx context.Context, settled time.Time) error {
	acks, err := d.acks(ctx, "etcd-writer")
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(acks, func(a ack) bool { return a.at.After(settled) }) {
		return fmt.Errorf("etcd acknowledged no increment after %s while %s was cut off: the other two clusters lost the quorum", settled.Format(time.TimeOnly), d.broker.Name)
	}
	return nil
}

// memberCutOff cuts the broker's cluster, which runs only an etcd member, off the WAN
// (every gateway's WAN cable) for hold: etcd keeps its quorum in the other two.
func (d *dbLab) memberCutOff(hold time.Duration) fault {
	return fault{name: "etcd member's cluster cut off the WAN", hold: hold,
		inject: func(ctx context.Context) error { return d.setBrokerWAN(ctx, false) },
		during: func(ctx context.Context, from time.Time) error { return d.quorumKeptSince(ctx, from.Add(hold/2)) },
		repair: func(ctx context.Context) error {
			if err := d.setBrokerWAN(ctx, true); err != nil {
				return err
			}
			return d.waitConnected(ctx, time.Minute)
		}}
}

// brokerOutageWithCutOff stops the broker's API server for hold and, inside the
// outage, from after until after+cut, cuts the broker's cluster (an etcd member) off
// the WAN too: the member's tunnels must come back from what the gateways know, with
// no broker to learn anything new from. PostgreSQL does not cross that cluster, so its
// gap is the broker outage's alone.
func (d *dbLab) brokerOutageWithCutOff(hold, after, cut time.Duration) fault {
	f := d.brokerOutage(hold)
	f.name = fmt.Sprintf("broker outage %s, %s cut off the WAN for %s inside it", hold, d.broker.Name, cut)
	f.meanwhile = func(ctx context.Context, from time.Time) error {
		sleep := func(until time.Time) error {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Until(until)):
				return nil
			}
		}
		if err := sleep(from.Add(after)); err != nil {
			return err
		}
		if err := d.setBrokerWAN(ctx, false); err != nil {
			return err
		}
		cutAt := time.Now()
		if err := sleep(cutAt.Add(cut)); err != nil {
			return err
		}
		errs := []error{d.quorumKeptSince(ctx, cutAt.Add(cut/2)), d.setBrokerWAN(ctx, true)}
		// Whether the member is back before the broker is, the rejoin check at the
		// end tells for certain; this says how soon, for the log.
		back := time.Now()
		before, err := d.counter(ctx, d.primary)
		if err == nil {
			err = poll(ctx, time.Until(from.Add(hold)), 250*time.Millisecond, func(ctx context.Context) error {
				v, err := d.counter(ctx, d.broker)
				if err == nil && v < before {
					err = fmt.Errorf("behind")
				}
				return err
			})
		}
		if err == nil {
			fmt.Printf("databases: %s's etcd member served a linearizable read %s after its WAN came back, the broker still down\n", d.broker.Name, time.Since(back).Round(10*time.Millisecond))
		} else {
			fmt.Printf("databases: %s's etcd member did not serve a linearizable read before the broker came back: %v\n", d.broker.Name, err)
		}
		return errors.Join(errs...)
	}
	return f
}

// cableSwitch switches the cable driver the primary's cluster prefers through Git, as
// a user would: the fleet file changes, the tree is rendered again and pushed, and each
// cluster's Flux applies it. It is over when the primary's active gateway runs the new
// driver to the standby's cluster and every connection is up.
func (d *dbLab) cableSwitch(to mcnetv1.CableDriver) fault {
	next := d.fleet.DeepCopy()
	for i := range next.Spec.Clusters {
		if next.Spec.Clusters[i].Name == d.primary.Name {
			// The fleet file names no port: the defaults gave the old driver's, and
			// the new driver's default follows it (VXLAN needs one port fleet-wide).
			next.Spec.Clusters[i].Cable, next.Spec.Clusters[i].CablePort = to, 0
		}
	}
	var rev string
	return fault{name: fmt.Sprintf("cable driver switch of %s to %s through Git", d.primary.Name, to),
		inject: func(ctx context.Context) error {
			rev = d.git.push(next, fmt.Sprintf("mcnet: %s prefers %s", d.primary.Name, to))
			// flux reconcile source git mcnet (and flux-system), in every cluster: fetch
			// now rather than at the next interval; the Kustomizations follow the new
			// artifact.
			var errs []error
			for _, c := range d.Clusters() {
				errs = append(errs, requestReconcile(ctx, c))
			}
			return errors.Join(errs...)
		},
		repair: func(ctx context.Context) error {
			d.git.converge(next, rev)
			d.fleet = next
			err := lab.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
				gw, err := activeGateway(ctx, d.primary)
				if err != nil {
					return err
				}
				for _, c := range gw.Status.Connections {
					if c.Cluster == d.standby.Name && c.Cable == to && c.Status == mcnetv1.Connected {
						return nil
					}
				}
				return fmt.Errorf("%s: no connected %s cable to %s yet (%+v)", gw.Name, to, d.standby.Name, gw.Status.Connections)
			})
			if err != nil {
				return err
			}
			return d.waitConnected(ctx, time.Minute)
		}}
}

// requestReconcile asks cluster c's Flux to fetch both its GitRepositories now, as
// `flux reconcile source git NAME` does: mcnet, which the rendered tree declares for
// its repoURL and mcnet's Kustomizations apply from, and flux-system, the bootstrap's,
// which applies flux/CLUSTER.
func requestReconcile(ctx context.Context, c *lab.Cluster) error {
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{"reconcile.fluxcd.io/requestedAt":%q}}}`, time.Now().Format(time.RFC3339Nano))
	gvr := schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}
	for _, name := range []string{"mcnet", "flux-system"} {
		if _, err := dyn.Resource(gvr).Namespace("flux-system").Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("%s: reconcile GitRepository %s: %w", c.Name, name, err)
		}
	}
	return nil
}

// TestDatabases runs the example of docs/databases.md across three clusters, installed
// through Git and Flux, and hits it with the faults a database owner fears while both
// writers run: the active gateway of the primary's cluster SIGKILLed, then powered off;
// the broker's API server gone for 60 s, with the etcd member's cluster cut off the WAN
// for 15 s inside that outage; the primary's cluster switched from WireGuard to VXLAN
// through Git. After each, both writers acknowledge writes again and the standby's
// replay lag is back under 1 s; after all, every acknowledged increment and row is
// there, the cut-off member serves linearizable reads again, and the primary sees the
// standby's own pod IP.
func TestDatabases(t *testing.T) {
	labtest.RequireRoot(t)
	ctx := t.Context()
	start := time.Now()
	d := startDatabaseLab(t)
	t.Logf("lab connected and databases writing after %s", time.Since(start).Round(time.Second))

	faults := []fault{
		d.gatewayKill(),
		d.gatewayPowerOff(5 * time.Second),
		d.brokerOutageWithCutOff(60*time.Second, 10*time.Second, 15*time.Second),
		d.cableSwitch(mcnetv1.CableVXLAN),
	}
	for _, f := range faults {
		res, err := d.run(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: longest write gap etcd %s, PostgreSQL %s; replay lag under 1 s %s after the repair began; gateway Lease moved after %s",
			f.name, res.etcdGap.Round(10*time.Millisecond), res.pgGap.Round(10*time.Millisecond), res.lagUnder1s.Round(10*time.Millisecond), res.leaseMoved.Round(10*time.Millisecond))
	}
	d.checkCutOffMemberRejoined(t)
	d.checkNoAcknowledgedWriteLost(t)
	d.checkSourcePreserved(t)
}

// checkCutOffMemberRejoined reads the counter linearizably through the member that was
// cut off: it needs the leader's read index, so it answers only as a member of the
// quorum again, and its answer is at least what the others had.
func (d *dbLab) checkCutOffMemberRejoined(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	before, err := d.counter(ctx, d.primary)
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		v, err := d.counter(ctx, d.broker)
		if err != nil {
			return err
		}
		if v < before {
			return fmt.Errorf("%s's member reads counter %d, behind %d", d.broker.Name, v, before)
		}
		return nil
	}); err != nil {
		t.Errorf("the cut-off member did not rejoin: %v", err)
	}
}

// checkNoAcknowledgedWriteLost checks every acknowledged increment left its key and the
// counter counts them, and every acknowledged row is on the standby.
func (d *dbLab) checkNoAcknowledgedWriteLost(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	acks, err := d.acks(ctx, "etcd-writer")
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.etcdRange(ctx, d.primary, "inc/", "inc0", true)
	if err != nil {
		t.Fatal(err)
	}
	incs := map[int64]bool{}
	for _, kv := range r.Kvs {
		n, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), "inc/"), 10, 64)
		if err != nil {
			t.Fatalf("key %q: %v", kv.Key, err)
		}
		incs[n] = true
	}
	counter, err := d.counter(ctx, d.primary)
	if err != nil {
		t.Fatal(err)
	}
	var lost []int64
	for _, a := range acks {
		if !incs[a.n] {
			lost = append(lost, a.n)
		}
	}
	if len(lost) > 0 || len(acks) == 0 || counter < acks[len(acks)-1].n {
		t.Errorf("etcd: %d acknowledged increments, %d lost (%v), counter %d, last acknowledged %d", len(acks), len(lost), lost[:min(len(lost), 10)], counter, acks[len(acks)-1].n)
	}
	// The counter moved only by the writer's transactions: one inc/ key per value.
	if int64(len(incs)) < counter-1 || int64(len(incs)) > counter {
		t.Errorf("etcd: counter %d but %d inc/ keys", counter, len(incs))
	}
	t.Logf("etcd: %d acknowledged increments, all readable; counter %d", len(acks), counter)

	pgAcks, err := d.acks(ctx, "pg-writer")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.waitWrites(ctx, time.Now(), time.Minute); err != nil {
		t.Fatal(err)
	}
	out, err := psql(ctx, d.standby, "pg-standby-0", "SELECT n FROM rows ORDER BY n")
	if err != nil {
		t.Fatal(err)
	}
	onStandby := map[int64]bool{}
	for _, s := range strings.Fields(out) {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("standby row %q: %v", s, err)
		}
		onStandby[n] = true
	}
	lost = nil
	for _, a := range pgAcks {
		if !onStandby[a.n] {
			lost = append(lost, a.n)
		}
	}
	if len(lost) > 0 || len(pgAcks) == 0 {
		t.Errorf("PostgreSQL: %d synchronously committed rows, %d missing on the standby (%v)", len(pgAcks), len(lost), lost[:min(len(lost), 10)])
	}
	t.Logf("PostgreSQL: %d synchronously committed rows, all on the standby (%d rows there)", len(pgAcks), len(onStandby))
}

// checkSourcePreserved checks the primary sees the standby's connection come from the
// standby pod's own IP, as a synchronous standby.
func (d *dbLab) checkSourcePreserved(t *testing.T) {
	t.Helper()
	ctx := t.Context()
	pod, err := d.standby.Client.CoreV1().Pods(dbNamespace).Get(ctx, "pg-standby-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.replication(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.clientAddr != pod.Status.PodIP || r.syncState != "sync" {
		t.Errorf("pg_stat_replication: client_addr %s sync_state %s, want the standby pod's IP %s and sync", r.clientAddr, r.syncState, pod.Status.PodIP)
	}
}
