package probe

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Defaults and bounds of a NetworkTest.
const (
	DefaultServerLifetime = 2 * time.Minute
	MaxServerLifetime     = mcnetv1.MaxNetworkTestDuration
	DefaultDuration       = 5 * time.Second
	MaxDuration           = 2 * time.Minute
	DefaultCount          = 100
	DefaultInterval       = 20 * time.Millisecond
	// FinishedTTL is how long a finished NetworkTest is kept before the agent deletes
	// it, for a client that died before cleaning up.
	FinishedTTL = 15 * time.Minute
)

// AgentOptions say which NetworkTests an agent runs.
type AgentOptions struct {
	// Namespace holds the NetworkTests (mcnet-system).
	Namespace string
	// NodeName is this agent's node.
	NodeName string
	// Agent is the component running this agent: gateway or route-agent. Gateway
	// nodes run both, and each test names one.
	Agent mcnetv1.Agent
	// ListenHost is where servers listen; empty means every address.
	ListenHost string
	// AllowTarget says whether a client may measure toward addr: nil when it is one of
	// the fleet's addresses, else why not. Without it every client test fails.
	AllowTarget func(ctx context.Context, addr netip.Addr) error
}

// RunAgent serves and runs the NetworkTests addressed to this node and agent until
// ctx ends. It needs get, list, watch and delete on networktests and update/patch on
// networktests/status in opts.Namespace. Errors of individual tests go into their
// status; RunAgent itself returns only when ctx ends.
func RunAgent(ctx context.Context, c client.WithWatch, opts AgentOptions) error {
	a := &agent{c: c, opts: opts, log: logr.FromContextOrDiscard(ctx).WithName("probe"), running: map[types.UID]context.CancelFunc{}}
	defer a.stopAll()
	for {
		if err := a.watch(ctx); err != nil && ctx.Err() == nil {
			a.log.V(1).Info("NetworkTest watch ended; retrying", "error", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

type agent struct {
	c    client.WithWatch
	opts AgentOptions
	log  logr.Logger

	mu      sync.Mutex
	running map[types.UID]context.CancelFunc
	active  int // tests serving or measuring now (running also holds finished ones)
	wg      sync.WaitGroup
}

func (a *agent) selector() []client.ListOption {
	return []client.ListOption{
		client.InNamespace(a.opts.Namespace),
		client.MatchingLabels{mcnetv1.NodeLabel: a.opts.NodeName, mcnetv1.AgentLabel: string(a.opts.Agent)},
	}
}

// watch lists, starts what is new, stops what is gone, then follows a watch until it
// ends.
func (a *agent) watch(ctx context.Context) error {
	var list mcnetv1.NetworkTestList
	if err := a.c.List(ctx, &list, a.selector()...); err != nil {
		return fmt.Errorf("list NetworkTests: %w", err)
	}
	present := map[types.UID]bool{}
	for i := range list.Items {
		present[list.Items[i].UID] = true
		a.handle(ctx, &list.Items[i])
	}
	a.mu.Lock()
	for uid, cancel := range a.running {
		if !present[uid] {
			cancel()
		}
	}
	a.mu.Unlock()
	opts := append(a.selector(), &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
	w, err := a.c.Watch(ctx, &mcnetv1.NetworkTestList{}, opts...)
	if err != nil {
		return fmt.Errorf("watch NetworkTests: %w", err)
	}
	defer w.Stop()
	resync := time.NewTicker(time.Minute)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-resync.C:
			return nil // list again: collects finished tests and anything missed
		case ev, ok := <-w.ResultChan():
			if !ok {
				return errors.New("watch closed")
			}
			nt, ok := ev.Object.(*mcnetv1.NetworkTest)
			if !ok {
				return fmt.Errorf("watch error: %v", ev.Object)
			}
			switch ev.Type {
			case watch.Deleted:
				a.stop(nt.UID)
			case watch.Added, watch.Modified:
				a.handle(ctx, nt)
			}
		}
	}
}

func (a *agent) stop(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if cancel, ok := a.running[uid]; ok {
		cancel()
	}
}

func (a *agent) stopAll() {
	a.mu.Lock()
	for _, cancel := range a.running {
		cancel()
	}
	a.mu.Unlock()
	a.wg.Wait()
}

// handle starts a test the agent has not seen, fails one a previous agent process left
// half done, and deletes finished ones past their TTL.
func (a *agent) handle(ctx context.Context, nt *mcnetv1.NetworkTest) {
	a.mu.Lock()
	_, seen := a.running[nt.UID]
	a.mu.Unlock()
	if seen {
		return
	}
	switch nt.Status.Phase {
	case mcnetv1.TestSucceeded, mcnetv1.TestFailed:
		if done := nt.Status.CompletionTime; done != nil && time.Since(done.Time) > FinishedTTL {
			_ = client.IgnoreNotFound(a.c.Delete(ctx, nt))
		}
		return
	case mcnetv1.TestReady, mcnetv1.TestRunning:
		a.finish(ctx, nt, mcnetv1.TestFailed, "the agent restarted while the test ran; run it again", nil)
		return
	}
	if err := CheckBounds(nt.Spec); err != nil {
		a.finish(ctx, nt, mcnetv1.TestFailed, err.Error(), nil)
		return
	}
	tctx, cancel := context.WithCancel(ctx)
	a.mu.Lock()
	if a.active >= mcnetv1.MaxConcurrentNetworkTests {
		a.mu.Unlock()
		cancel()
		a.finish(ctx, nt, mcnetv1.TestFailed, fmt.Sprintf("this agent already runs %d NetworkTests, the most it runs at once; run it again when they are done", mcnetv1.MaxConcurrentNetworkTests), nil)
		return
	}
	a.running[nt.UID] = cancel
	a.active++
	a.mu.Unlock()
	nt = nt.DeepCopy()
	a.wg.Go(func() {
		defer cancel()
		// Remembered until the object is gone, so a finished test is not run again.
		defer func() {
			<-tctx.Done()
			a.mu.Lock()
			delete(a.running, nt.UID)
			a.mu.Unlock()
		}()
		if nt.Spec.Role == mcnetv1.NetworkTestServer {
			a.serve(tctx, nt)
		} else {
			a.measure(tctx, nt)
		}
		a.mu.Lock()
		a.active--
		a.mu.Unlock()
	})
}

// serve listens until the test is deleted or its lifetime ends.
func (a *agent) serve(ctx context.Context, nt *mcnetv1.NetworkTest) {
	life := durationOr(nt.Spec.Duration, DefaultServerLifetime, MaxServerLifetime)
	srv, err := Listen(ctx, net.JoinHostPort(a.opts.ListenHost, "0"), nt.Spec.Session)
	if err != nil {
		a.finish(ctx, nt, mcnetv1.TestFailed, err.Error(), nil)
		return
	}
	defer srv.Close()
	addrs, _ := LocalAddresses()
	if a.opts.ListenHost != "" {
		if h, err := netip.ParseAddr(a.opts.ListenHost); err == nil {
			addrs = []netip.Addr{h}
		}
	}
	now := metav1.Now()
	if !a.patch(ctx, nt, func(s *mcnetv1.NetworkTestStatus) {
		s.Phase = mcnetv1.TestReady
		s.Message = fmt.Sprintf("listening on TCP and UDP port %d for %s", srv.Port(), life)
		s.Port = int32(srv.Port())
		s.Addresses = strs(addrs)
		s.StartTime = &now
	}) {
		return
	}
	select {
	case <-ctx.Done():
		return // deleted: nothing to report
	case <-time.After(life):
	}
	a.finish(ctx, nt, mcnetv1.TestSucceeded, fmt.Sprintf("server closed after %s", life), nil)
}

// measure runs a client test and writes its result.
func (a *agent) measure(ctx context.Context, nt *mcnetv1.NetworkTest) {
	e, err := endpointOf(nt)
	if err == nil {
		err = a.allowTarget(ctx, e.Target.Addr())
	}
	if err != nil {
		a.finish(ctx, nt, mcnetv1.TestFailed, err.Error(), nil)
		return
	}
	now := metav1.Now()
	if !a.patch(ctx, nt, func(s *mcnetv1.NetworkTestStatus) {
		s.Phase = mcnetv1.TestRunning
		s.Message = fmt.Sprintf("measuring %s to %s", nt.Spec.Type, e.Target)
		s.StartTime = &now
		if e.Source.IsValid() {
			s.Source = e.Source.String()
		}
	}) {
		return
	}
	set, err := Run(ctx, nt.Spec, e)
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		a.finish(ctx, nt, mcnetv1.TestFailed, err.Error(), set)
		return
	}
	a.finish(ctx, nt, mcnetv1.TestSucceeded, "measured", set)
}

// Run performs the measurement spec asks for against e and returns a function that
// writes the result into a status (also after a partial failure, e.g. loss).
func Run(ctx context.Context, spec mcnetv1.NetworkTestSpec, e Endpoint) (func(*mcnetv1.NetworkTestStatus), error) {
	switch spec.Type {
	case mcnetv1.TestThroughput:
		streams := int(spec.Streams)
		r, err := Throughput(ctx, e, max(streams, 1), durationOr(spec.Duration, DefaultDuration, MaxDuration))
		if err != nil {
			return nil, err
		}
		return func(s *mcnetv1.NetworkTestStatus) {
			s.Throughput = &mcnetv1.ThroughputResult{
				BitsPerSecond: int64(r.BitsPerSecond()), Bytes: r.Bytes,
				Duration: metav1.Duration{Duration: r.Duration}, Streams: int32(r.Streams),
			}
		}, nil
	case mcnetv1.TestLatency, mcnetv1.TestUDP:
		count := int(spec.Count)
		if count <= 0 {
			count = DefaultCount
			if spec.Type == mcnetv1.TestUDP {
				count = 5
			}
		}
		r, err := Latency(ctx, e, count, durationOr(spec.Interval, DefaultInterval, time.Second))
		set := func(s *mcnetv1.NetworkTestStatus) {
			s.Latency = &mcnetv1.LatencyResult{
				Sent: int32(r.Sent), Received: int32(r.Received),
				Min: metav1.Duration{Duration: r.Min}, Avg: metav1.Duration{Duration: r.Avg},
				P99: metav1.Duration{Duration: r.P99}, Max: metav1.Duration{Duration: r.Max},
			}
		}
		return set, err
	case mcnetv1.TestMTU:
		r, err := PathMTU(ctx, e)
		set := func(s *mcnetv1.NetworkTestStatus) {
			s.MTU = &mcnetv1.MTUResult{PathMTU: int32(r.PathMTU), InterfaceMTU: int32(r.InterfaceMTU), Interface: r.Interface}
		}
		return set, err
	}
	return nil, fmt.Errorf("unknown test type %q", spec.Type)
}

func endpointOf(nt *mcnetv1.NetworkTest) (Endpoint, error) {
	target, err := netip.ParseAddrPort(nt.Spec.Target)
	if err != nil {
		return Endpoint{}, fmt.Errorf("spec.target %q: %w", nt.Spec.Target, err)
	}
	e := Endpoint{Target: target, Session: nt.Spec.Session}
	var cidrs []netip.Prefix
	for _, s := range nt.Spec.SourceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Endpoint{}, fmt.Errorf("spec.sourceCIDRs %q: %w", s, err)
		}
		cidrs = append(cidrs, p)
	}
	if len(cidrs) > 0 {
		src, ok := SourceIn(cidrs)
		if !ok {
			return Endpoint{}, fmt.Errorf("node has no address in %v to send from, so replies would not come back through the tunnel", nt.Spec.SourceCIDRs)
		}
		e.Source = src
	}
	return e, nil
}

func (a *agent) allowTarget(ctx context.Context, addr netip.Addr) error {
	if a.opts.AllowTarget == nil {
		return fmt.Errorf("spec.target %s: this agent knows no fleet addresses to measure toward", addr)
	}
	if err := a.opts.AllowTarget(ctx, addr.Unmap()); err != nil {
		return fmt.Errorf("spec.target %s is not a fleet address (%w); NetworkTests measure only toward members' networks, their gateways and the broker", addr, err)
	}
	return nil
}

// CheckBounds refuses a spec over the limits the CRD's validation sets, for an object
// written before the CRD had them: the agent runs nothing unbounded.
func CheckBounds(spec mcnetv1.NetworkTestSpec) error {
	var errs []error
	d := func(p *metav1.Duration) time.Duration {
		if p == nil {
			return 0
		}
		return p.Duration
	}
	if d(spec.Duration) > mcnetv1.MaxNetworkTestDuration {
		errs = append(errs, fmt.Errorf("spec.duration %s is over the limit of %s", d(spec.Duration), mcnetv1.MaxNetworkTestDuration))
	}
	if spec.Role == mcnetv1.NetworkTestClient && spec.Type == mcnetv1.TestThroughput && d(spec.Duration) > MaxDuration {
		errs = append(errs, fmt.Errorf("spec.duration %s of a throughput client is over the limit of %s", d(spec.Duration), MaxDuration))
	}
	if d(spec.Interval) > time.Second {
		errs = append(errs, fmt.Errorf("spec.interval %s is over the limit of 1s", d(spec.Interval)))
	}
	interval := d(spec.Interval)
	if interval <= 0 {
		interval = DefaultInterval
	}
	if total := interval * time.Duration(spec.Count); total > mcnetv1.MaxNetworkTestEchoes {
		errs = append(errs, fmt.Errorf("spec.count %d x spec.interval %s = %s is over the limit of %s", spec.Count, interval, total, mcnetv1.MaxNetworkTestEchoes))
	}
	if spec.Streams > 64 {
		errs = append(errs, fmt.Errorf("spec.streams %d is over the limit of 64", spec.Streams))
	}
	if len(spec.SourceCIDRs) > 4 {
		errs = append(errs, fmt.Errorf("spec.sourceCIDRs has %d entries, over the limit of 4", len(spec.SourceCIDRs)))
	}
	return errors.Join(errs...)
}

// finish writes a final phase; set (optional) adds the result.
func (a *agent) finish(ctx context.Context, nt *mcnetv1.NetworkTest, phase mcnetv1.NetworkTestPhase, msg string, set func(*mcnetv1.NetworkTestStatus)) {
	now := metav1.Now()
	a.patch(ctx, nt, func(s *mcnetv1.NetworkTestStatus) {
		s.Phase, s.Message, s.CompletionTime = phase, msg, &now
		if set != nil {
			set(s)
		}
	})
}

// patch merges a status change; false when the test is gone or cannot be written.
func (a *agent) patch(ctx context.Context, nt *mcnetv1.NetworkTest, change func(*mcnetv1.NetworkTestStatus)) bool {
	base := nt.DeepCopy()
	change(&nt.Status)
	nt.Status.ObservedGeneration = nt.Generation
	if err := a.c.Status().Patch(ctx, nt, client.MergeFrom(base)); err != nil {
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			a.log.Error(err, "Write NetworkTest status", "networkTest", nt.Name)
		}
		return false
	}
	return true
}

func durationOr(d *metav1.Duration, def, limit time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return min(d.Duration, limit)
}

func strs(addrs []netip.Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}
