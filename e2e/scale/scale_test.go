//go:build e2e && scale

package scale

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/controller"
	"github.com/mcnet-io/mcnet/kustomize"
)

var (
	flagN       = flag.String("scale.n", "10,100,300,1000", "fleet sizes to measure, ascending, comma-separated (one real member, the rest simulated)")
	flagOut     = flag.String("scale.out", "", "directory for results.json, table.md and scale.png (default: bin/scale under the repository)")
	flagSamples = flag.Int("scale.samples", 20, "Endpoint changes timed per fleet size")
	flagWindow  = flag.Duration("scale.window", 30*time.Second, "how long CPU and watch events are measured per fleet size")
	flagBudget  = flag.Duration("scale.budget", 28*time.Minute, "time for all sizes: a size not measured by then is reported as not reached and the lab is removed")
)

// realMember is the one member running mcnet's real components; it also hosts the
// broker namespace, as the first cluster of a fleet usually does.
const realMember = "c0000"

// TestScale is `make scale`: one real cluster of the lab (real nodes: kubelet,
// containerd, kube-proxy; mcnet's rendered controller, gateway and route agent from its
// image), whose API server also serves the broker with the rendered namespace, RBAC and
// admission policies, and N-1 simulated members that write there, each with its own
// broker identity, what a member's controller writes: a Cluster, an Endpoint with a
// WireGuard key, 10 exports (ServiceImport and EndpointSlice), and churn. It grows the
// fleet through the sizes given and measures each (results in -scale.out).
func TestScale(t *testing.T) {
	labtest.RequireRoot(t)
	sizes, err := parseSizes(*flagN)
	if err != nil {
		t.Fatal(err)
	}
	out := *flagOut
	if out == "" {
		root, err := lab.RepoRoot("")
		if err != nil {
			t.Fatal(err)
		}
		out = filepath.Join(root, "bin", "scale")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	l := labtest.Start(t, lab.Options{Clusters: []lab.ClusterOptions{{Name: realMember, Nodes: 2}}})
	progress = t.Logf
	r := &run{t: t, lab: l, real: l.Clusters()[0], repo: filepath.Join(t.TempDir(), "fleet-repo")}
	var results []Result
	ctx, cancel := context.WithTimeout(t.Context(), *flagBudget)
	defer cancel()
	for _, n := range sizes {
		res := r.step(ctx, n)
		results = append(results, res)
		t.Logf("N=%d: %s", n, res.Summary())
		if err := WriteResults(out, results); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			break
		}
	}
	t.Logf("results in %s", out)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 3 || n > mcnetv1.MaxClusters {
			return nil, fmt.Errorf("-scale.n: %q is not a fleet size between 3 and %d", f, mcnetv1.MaxClusters)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-scale.n: sizes must ascend (the fleet grows): %s", s)
		}
		out = append(out, n)
	}
	return out, nil
}

type run struct {
	t    *testing.T
	lab  *lab.Lab
	real *lab.Cluster
	repo string

	admin     client.Client
	sims      []*Sim // index i-1 is member i
	installed bool
	dnsPod    *lab.Pod
	dnsServer string
}

// fleet is the ClusterSet of n clusters: the real one with the lab's networks, the
// simulated ones with theirs, every cable WireGuard.
func (r *run) fleet(n int) *mcnetv1.ClusterSet {
	cs := &mcnetv1.ClusterSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: mcnetv1.GroupVersion.String(), Kind: "ClusterSet"},
		ObjectMeta: metav1.ObjectMeta{Name: "scale"},
	}
	server := "https://" + r.real.PublicAPIServer.String()
	cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{Name: realMember, Server: server,
		PodCIDRs: []string{r.real.PodCIDR.String()}, ServiceCIDRs: []string{r.real.ServiceCIDR.String()}, Cable: mcnetv1.CableWireGuard})
	for i := 1; i < n; i++ {
		cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{Name: SimName(i),
			PodCIDRs: []string{SimPod(i).String()}, ServiceCIDRs: []string{SimSvc(i).String()}, Cable: mcnetv1.CableWireGuard})
	}
	cs.Spec.Broker = mcnetv1.BrokerSpec{Cluster: realMember, Server: server}
	fleetlab.UseLabImage(r.lab, cs)
	return cs
}

// render renders and writes the fleet's tree, timing the render as `kubectl mcnet
// render` runs it (defaults, validation, render in memory).
func (r *run) render(n int, res *Result) {
	t := r.t
	cs := r.fleet(n)
	start := time.Now()
	mcnetv1.SetDefaults_ClusterSet(cs)
	if errs := mcnetv1.ValidateClusterSet(cs); len(errs) > 0 {
		t.Fatalf("fleet of %d: %v", n, errs.ToAggregate())
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "lab"})
	if err != nil {
		t.Fatal(err)
	}
	res.RenderSeconds = time.Since(start).Seconds()
	if err := os.MkdirAll(r.repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := kustomize.Write(r.repo, tree); err != nil {
		t.Fatal(err)
	}
	bytes, onDisk, files, err := DirSize(r.repo)
	if err != nil {
		t.Fatal(err)
	}
	res.TreeBytes, res.TreeDiskBytes, res.TreeFiles = bytes, onDisk, files
}

// install applies what Flux would after the render: CRDs once, the broker (new
// identities) and the real member's overlay (the grown fleet table) every time.
func (r *run) install(ctx context.Context) {
	t := r.t
	c := r.real
	if !r.installed {
		if err := c.ApplyKustomization(ctx, filepath.Join(r.repo, kustomize.DirCRDs)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ApplyKustomization(ctx, filepath.Join(r.repo, kustomize.DirBroker)); err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyKustomization(ctx, filepath.Join(r.repo, kustomize.DirClusters, realMember)); err != nil {
		t.Fatal(err)
	}
	if r.installed {
		return
	}
	if err := fleetlab.DeliverBrokerCredentials(ctx, c, c, mcnetv1.DefaultBrokerNamespace); err != nil {
		t.Fatal(err)
	}
	if err := c.StartClusterDNS(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitWorkloads(ctx, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	s, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	if r.admin, err = client.New(c.Config, client.Options{Scheme: s}); err != nil {
		t.Fatal(err)
	}
	if err := r.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ExportNamespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	r.dnsPod, err = r.lab.AddPod(ctx, c.Workers()[0], lab.PodOptions{Name: "dig"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := c.Client.CoreV1().Services("kube-system").Get(ctx, "kube-dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.dnsServer = svc.Spec.ClusterIP
	r.installed = true
}

// newSim mints member i's broker identity (as `kubectl mcnet broker credentials`
// would) and returns it ready to publish.
func (r *run) newSim(ctx context.Context, i int) (*Sim, error) {
	ns := mcnetv1.DefaultBrokerNamespace
	sa := kustomize.BrokerServiceAccount(SimName(i))
	acct, err := r.real.Client.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	tr, err := r.real.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authv1.TokenRequest{
		Spec: authv1.TokenRequestSpec{ExpirationSeconds: new(int64(24 * 3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for %s: %w", sa, err)
	}
	cfg := rest.AnonymousClientConfig(r.real.Config)
	cfg.BearerToken = tr.Status.Token
	cfg.QPS, cfg.Burst = 20, 40
	s, err := controller.Scheme()
	if err != nil {
		return nil, err
	}
	cl, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, err
	}
	return &Sim{Index: i, Name: SimName(i), Pod: SimPod(i), Svc: SimSvc(i), Client: cl, Namespace: ns,
		Owner: &metav1.OwnerReference{APIVersion: "v1", Kind: "ServiceAccount", Name: acct.Name, UID: acct.UID}}, nil
}

// parallel runs fn for each of from..to-1 with a few workers.
func parallel(ctx context.Context, from, to int, fn func(ctx context.Context, i int) error) error {
	var (
		next atomic.Int64
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	next.Store(int64(from))
	for range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= to || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// component is a running mcnet component's process on the real member.
type component struct {
	name string
	pid  int
	node *lab.Node
}

func (r *run) components(ctx context.Context) (map[string]component, error) {
	out := map[string]component{}
	for _, w := range []string{"mcnet-controller", "mcnet-gateway", "mcnet-route-agent"} {
		pods, err := r.real.WorkloadPods(ctx, w)
		if err != nil {
			return nil, err
		}
		for _, p := range pods {
			for _, pid := range p.PIDs {
				// The gateway runs on the gateway node; the route agent that routes is
				// the worker's (on the gateway node it idles).
				if w == "mcnet-route-agent" && p.Node.Gateway {
					out["mcnet-route-agent(gateway node)"] = component{w, pid, p.Node}
					continue
				}
				out[w] = component{w, pid, p.Node}
			}
		}
	}
	for _, p := range r.lab.Processes() {
		switch p.Name {
		case r.real.Name + "/kube-apiserver", r.real.Name + "/etcd":
			out[strings.TrimPrefix(p.Name, r.real.Name+"/")] = component{p.Name, p.PID, nil}
		}
	}
	for _, want := range []string{"mcnet-controller", "mcnet-gateway", "mcnet-route-agent", "kube-apiserver", "etcd"} {
		if _, ok := out[want]; !ok {
			return nil, fmt.Errorf("no running %s on the real member", want)
		}
	}
	return out, nil
}

// kernelHas reports whether the real member's kernel carries member s: the gateway's
// WireGuard peer with its current key and address, and, with routes, the route to its
// pod network on the gateway node and on the worker.
func (r *run) kernelHas(ctx context.Context, comps map[string]component, s *Sim, routes bool) error {
	peers, err := WireGuardPeers(comps["mcnet-gateway"].pid)
	if err != nil {
		return err
	}
	p, ok := peers[s.Key]
	if !ok {
		return fmt.Errorf("no WireGuard peer for %s's key", s.Name)
	}
	if !strings.HasPrefix(p.Endpoint, s.Gateway.String()+":") {
		return fmt.Errorf("peer %s at %s, want %s", s.Name, p.Endpoint, s.Gateway)
	}
	if !routes {
		return nil
	}
	for _, n := range []*lab.Node{r.real.Gateways()[0], r.real.Workers()[0]} {
		out, err := n.Exec(ctx, "ip", "-4", "route", "show", "table", "all", "to", s.Pod.String())
		if err != nil {
			return err
		}
		if !strings.Contains(out, s.Pod.String()) {
			return fmt.Errorf("node %s has no route to %s (%s)", n.Name, s.Pod, s.Name)
		}
	}
	return nil
}

// progress, when set, is told every 20 s what a poll is still waiting for.
var progress func(format string, args ...any)

// poll calls cond every interval until it returns nil and returns how long that took.
func poll(ctx context.Context, timeout, interval time.Duration, cond func(context.Context) error) (time.Duration, error) {
	start, reported := time.Now(), time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = cond(ctx); last == nil {
			return time.Since(start), nil
		}
		if progress != nil && time.Since(reported) > 20*time.Second {
			progress("still waiting after %s: %v", time.Since(start).Round(time.Second), last)
			reported = time.Now()
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("not within %s: %w", timeout, last)
		case <-time.After(interval):
		}
	}
}

// churn keeps (n-1)/10 Endpoint updates and as many EndpointSlice updates per second
// going, each by a random member (never one being timed), until stop.
type churn struct {
	updates, failures atomic.Int64
	stop              func()
	done              sync.WaitGroup
}

func (r *run) startChurn(ctx context.Context, busy *sync.Map) *churn {
	ch := &churn{}
	ctx, ch.stop = context.WithCancel(ctx)
	rate := float64(len(r.sims)) / 10
	every := time.Duration(float64(time.Second) / rate)
	loop := func(fn func(ctx context.Context, s *Sim, gen int) error) {
		defer ch.done.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		gen := 0
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			s := r.sims[rand.IntN(len(r.sims))]
			if _, taken := busy.LoadOrStore(s.Name, true); taken {
				continue
			}
			gen++
			go func() {
				defer busy.Delete(s.Name)
				if err := fn(ctx, s, gen); err != nil && ctx.Err() == nil {
					ch.failures.Add(1)
				} else {
					ch.updates.Add(1)
				}
			}()
		}
	}
	ch.done.Add(2)
	go loop(func(ctx context.Context, s *Sim, _ int) error { return s.MoveGateway(ctx, false) })
	go loop(func(ctx context.Context, s *Sim, gen int) error { return s.ChurnService(ctx, gen%Services, gen) })
	return ch
}

func (ch *churn) Stop() { ch.stop(); ch.done.Wait() }

// step grows the fleet to n members and measures it.
func (r *run) step(ctx context.Context, n int) Result {
	t := r.t
	res := Result{N: n}
	r.render(n, &res)
	r.install(ctx)

	// Every new member but the last joins at once; the last one is timed alone.
	prev := len(r.sims)
	joinerIdx := n - 1
	newSims := make([]*Sim, joinerIdx-prev-1)
	start := time.Now()
	err := parallel(ctx, prev+1, joinerIdx, func(ctx context.Context, i int) error {
		s, err := r.newSim(ctx, i)
		if err != nil {
			return err
		}
		newSims[i-prev-1] = s
		return s.Join(ctx)
	})
	if err != nil {
		t.Fatalf("members join: %v", err)
	}
	res.PublishSeconds = time.Since(start).Seconds()
	r.sims = append(r.sims, newSims...)
	t.Logf("N=%d: %d members published in %.1fs", n, len(newSims), res.PublishSeconds)
	comps, err := r.components(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = poll(ctx, 8*time.Minute, time.Second, func(ctx context.Context) error {
		peers, err := WireGuardPeers(comps["mcnet-gateway"].pid)
		if err != nil {
			return err
		}
		if len(peers) < len(r.sims) {
			return fmt.Errorf("%d WireGuard peers of %d", len(peers), len(r.sims))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("N=%d: gateway peers: %v", n, err)
	}
	res.BulkConvergeSeconds = time.Since(start).Seconds()
	t.Logf("N=%d: %d members published in %.1fs, all peers on the gateway after %.1fs", n, len(newSims), res.PublishSeconds, res.BulkConvergeSeconds)

	var busy sync.Map
	ch := r.startChurn(ctx, &busy)
	defer ch.Stop()
	time.Sleep(5 * time.Second) // the churn reaches its rate

	r.measureWindow(ctx, comps, &res)
	t.Logf("N=%d: measured over %s", n, *flagWindow)

	// Join time of one more cluster, already in the fleet table (Git) as it joins.
	joiner, err := r.newSim(ctx, joinerIdx)
	if err != nil {
		t.Fatal(err)
	}
	busy.Store(joiner.Name, true)
	start = time.Now()
	if err := joiner.Join(ctx); err != nil {
		t.Fatal(err)
	}
	took, err := poll(ctx, 5*time.Minute, 50*time.Millisecond, func(ctx context.Context) error { return r.kernelHas(ctx, comps, joiner, true) })
	if err != nil {
		t.Errorf("N=%d: join of %s: %v", n, joiner.Name, err)
	}
	res.JoinSeconds = took.Seconds()
	res.JoinWriteSeconds = (time.Since(start) - took).Seconds()
	r.sims = append(r.sims, joiner)
	busy.Delete(joiner.Name)

	// Endpoint changes: a member's gateway fails over to another node with a new key;
	// timed until the real gateway's WireGuard has the new peer at the new address.
	var conv []time.Duration
	for k := range *flagSamples {
		s := r.sims[rand.IntN(len(r.sims))]
		if _, taken := busy.LoadOrStore(s.Name, true); taken {
			continue
		}
		start := time.Now()
		err := s.MoveGateway(ctx, true)
		if err == nil {
			_, err = poll(ctx, 30*time.Second, 20*time.Millisecond, func(ctx context.Context) error { return r.kernelHas(ctx, comps, s, false) })
		}
		busy.Delete(s.Name)
		if err != nil {
			// Counted, not fatal: the remaining sizes are still worth measuring.
			t.Logf("N=%d: Endpoint change %d of %s: %v", n, k, s.Name, err)
			res.ConvergeFailures++
			continue
		}
		conv = append(conv, time.Since(start))
	}
	res.ConvergeSamples = len(conv)
	res.ConvergeP50, res.ConvergeP99 = Percentile(conv, 50).Seconds(), Percentile(conv, 99).Seconds()
	// The route of every member is in place on the worker.
	if out, err := r.real.Workers()[0].Exec(ctx, "ip", "-4", "route", "show", "table", "all"); err == nil {
		for _, s := range r.sims {
			if strings.Contains(out, s.Pod.String()+" ") {
				res.WorkerRoutes++
			}
		}
	}

	r.measureDNS(ctx, &res)
	ch.Stop()
	res.ChurnUpdates, res.ChurnFailures = ch.updates.Load(), ch.failures.Load()
	r.measureBroker(ctx, comps, &res)
	return res
}

// measureWindow samples CPU and watch events over the window and RSS at its end.
func (r *run) measureWindow(ctx context.Context, comps map[string]component, res *Result) {
	t := r.t
	before := map[string]int64{}
	for name, c := range comps {
		before[name], _ = CPUTicks(c.pid)
	}
	m0, err := Scrape(ctx, r.real.Client)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(*flagWindow)
	m1, err := Scrape(ctx, r.real.Client)
	if err != nil {
		t.Fatal(err)
	}
	secs := time.Since(start).Seconds()
	res.WatchEventsPerSecond = (m1.Sum("apiserver_watch_events_total") - m0.Sum("apiserver_watch_events_total")) / secs
	res.Processes = map[string]ProcStat{}
	for name, c := range comps {
		after, err := CPUTicks(c.pid)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		rss, err := lab.RSS(c.pid)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		res.Processes[name] = ProcStat{RSSMiB: float64(rss) / (1 << 20), CPUPercent: float64(after-before[name]) / secs}
	}
}

// measureDNS times the answer, through the cluster's DNS (CoreDNS forwarding to
// mcnet's), for a ClusterSetIP import that every simulated member exports.
func (r *run) measureDNS(ctx context.Context, res *Result) {
	name := "svc-0." + ExportNamespace + ".svc.clusterset.local."
	query := func(ctx context.Context) (time.Duration, error) {
		conn, err := r.dnsPod.Dial(ctx, "udp", r.dnsServer+":53")
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		c := &dns.Client{Timeout: 2 * time.Second}
		in, rtt, err := c.ExchangeWithConnContext(ctx, m, &dns.Conn{Conn: conn})
		if err != nil {
			return 0, err
		}
		if in.Rcode != dns.RcodeSuccess || len(in.Answer) == 0 {
			return 0, fmt.Errorf("%s: %s with %d answers", name, dns.RcodeToString[in.Rcode], len(in.Answer))
		}
		return rtt, nil
	}
	if _, err := poll(ctx, 5*time.Minute, time.Second, func(ctx context.Context) error { _, err := query(ctx); return err }); err != nil {
		r.t.Errorf("N=%d: DNS: %v", res.N, err)
		return
	}
	// How many exporters the real member's import merges.
	var slices discoveryv1.EndpointSliceList
	if err := r.admin.List(ctx, &slices, client.InNamespace(ExportNamespace)); err == nil {
		res.ImportedSlices = len(slices.Items)
	}
	var ds []time.Duration
	for range 50 {
		d, err := query(ctx)
		if err != nil {
			r.t.Errorf("N=%d: DNS: %v", res.N, err)
			continue
		}
		ds = append(ds, d)
	}
	res.DNSP50Ms, res.DNSP99Ms = float64(Percentile(ds, 50).Microseconds())/1000, float64(Percentile(ds, 99).Microseconds())/1000
}

// measureBroker counts the broker's objects and reads the store's size.
func (r *run) measureBroker(ctx context.Context, comps map[string]component, res *Result) {
	t := r.t
	ns := mcnetv1.DefaultBrokerNamespace
	for _, gvk := range []schema.GroupVersionKind{
		mcnetv1.GroupVersion.WithKind("ClusterList"), mcnetv1.GroupVersion.WithKind("EndpointList"),
		{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Kind: "ServiceImportList"},
		discoveryv1.SchemeGroupVersion.WithKind("EndpointSliceList"),
		corev1.SchemeGroupVersion.WithKind("ServiceAccountList"),
	} {
		var list metav1.PartialObjectMetadataList
		list.SetGroupVersionKind(gvk)
		if err := r.admin.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Errorf("count %s: %v", gvk.Kind, err)
			continue
		}
		res.BrokerObjects += len(list.Items)
	}
	m, err := Scrape(ctx, r.real.Client)
	if err != nil {
		t.Error(err)
		return
	}
	// Renamed apiserver_resource_objects in newer releases.
	res.StoreObjects = int64(max(m.Sum("apiserver_storage_objects"), m.Sum("apiserver_resource_objects")))
	res.EtcdMiB = m.Sum("apiserver_storage_size_bytes") / (1 << 20)
	if peers, err := WireGuardPeers(comps["mcnet-gateway"].pid); err == nil {
		res.WireGuardPeers = len(peers)
	}
	// RSS after the measurements, the higher of the two readings.
	for name, c := range comps {
		if rss, err := lab.RSS(c.pid); err == nil {
			p := res.Processes[name]
			p.RSSMiB = max(p.RSSMiB, float64(rss)/(1<<20))
			res.Processes[name] = p
		}
	}
}
