// Package gateway is the mcnet gateway's reconciler. One gateway per cluster is
// active, chosen by the Lease election (package election): it publishes the cluster's
// Endpoint, drives the dataplane to have a cable to every remote cluster, probes each
// remote gateway through its cable and reports the connections in its Gateway object,
// Events and metrics. The others stand by warm (informers synced, WireGuard key
// loaded, probe socket open) and route their own node's remote traffic to the active
// gateway, like any other node.
//
// There is one object to reconcile, this gateway node, so the gateway runs its own
// single-key loop (as the route agent does): an event on any watched object, a change
// of role, a probe lost or answered again, or the RequeueAfter the last Reconcile
// asked for runs Reconcile again. Reconciles are level-triggered: each one reads the
// whole view from the cache. The election, the prober and the liveness check run on
// goroutines of their own beside it and are only read by it.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway/election"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/healthz"
)

// DaemonSetName is the gateway's DaemonSet, checked on shutdown to tell an uninstall
// from a restart.
const DaemonSetName = "mcnet-gateway"

// dataplaneAPI is what the gateway needs of *dataplane.Dataplane.
type dataplaneAPI interface {
	Apply(ctx context.Context, s dataplane.State) error
	Cleanup(ctx context.Context) error
	PublicKey() (dataplane.Key, error)
	Stats(ctx context.Context) ([]dataplane.CableStatus, error)
}

// Run runs a gateway until ctx ends (SIGTERM). On a restart the active gateway keeps
// the Lease for its next process and the kernel state stays, so traffic keeps flowing
// and no connection flaps; on an uninstall it releases the Lease and removes its
// kernel state.
func Run(ctx context.Context, log logr.Logger, o Options) error {
	// Complete first, as before: the agent config's errors come ahead of the Lease
	// flags'. Start completes again, which is a no-op once it succeeded.
	if err := o.Complete(); err != nil {
		return err
	}
	if err := o.validateLease(); err != nil {
		return err
	}
	local, cfg, dp, err := o.Start(ctx, log)
	if err != nil {
		return err
	}
	defer dp.Close()
	g, err := newGateway(ctx, log, o, local, cfg, dp)
	if err != nil {
		return err
	}
	// Benchmarks and diagnose ask this agent for measurements through NetworkTests.
	if err := o.ServeNetworkTests(ctx, log, cfg, mcnetv1.AgentGateway); err != nil {
		return err
	}
	return g.run(ctx)
}

// Gateway is one gateway process, and the reconciler of its node.
type Gateway struct {
	opts    Options
	local   agent.Local
	log     logr.Logger
	cache   cache.Cache
	client  client.Client
	direct  client.Reader // uncached, for when the cache lags
	kube    kubernetes.Interface
	dp      dataplaneAPI
	metrics *metrics
	// recorder records Events on this node's Gateway; events is its broadcaster.
	recorder record.EventRecorder
	events   record.EventBroadcaster
	prober   *prober
	elector  *election.Elector
	// role is the elector's Role (a stand-in in tests).
	role func() (leading bool, leader string)
	// standbyCond is the ActiveGatewayReachable condition a standby reports; nil on the
	// active gateway or when nothing is known.
	standbyCond *metav1.Condition
	// allocCond is the RemotesWithinAllocation condition the active gateway reports.
	allocCond *metav1.Condition
	// rejected and tableErr are the last report of what remotes publish outside their
	// allocation and why the fleet table could not be read, so each is told once.
	rejected, tableErr string
	pubKey             dataplane.Key
	kick               chan struct{}
	// ready is why /readyz fails: nil once a Reconcile succeeded and applied.
	ready healthz.Readiness
	now   func() time.Time

	// Owned by the loop goroutine.
	wasActive bool
	applied   *dataplane.State
	appliedAt time.Time
	applyErr  error
	// remap is what the kernel's remap chains translate after the last apply.
	remap    []mcnetv1.RemapStatus
	conns    map[string]mcnetv1.Connection
	gwObj    *mcnetv1.Gateway
	statusAt time.Time
	seeded   bool
}

func newGateway(ctx context.Context, log logr.Logger, o Options, local agent.Local, cfg *rest.Config, dp dataplaneAPI) (*Gateway, error) {
	scheme := agent.Scheme()
	// Only the gateway Lease, whose holder is all the reconciler reads of it.
	c, cl, err := o.NewCache(cfg, map[client.Object]cache.ByObject{
		&coordinationv1.Lease{}: {Field: fields.OneTermEqualSelector("metadata.name", agent.LeaseName)},
	})
	if err != nil {
		return nil, err
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	// The Lease has a client of its own, so renewals (due every RetryPeriod, lost
	// after RenewDeadline) never wait in the rate limiter behind status writes and
	// Events.
	leaseKube, err := kubernetes.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		return nil, err
	}
	key, err := dp.PublicKey()
	if err != nil {
		return nil, err
	}
	events := record.NewBroadcaster(record.WithContext(ctx))
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events(o.Namespace)})
	g := &Gateway{
		opts: o, local: local, log: log, cache: c, client: cl, direct: direct, kube: kube, dp: dp,
		metrics: newMetrics(), events: events,
		recorder: events.NewRecorder(scheme, corev1.EventSource{Component: "mcnet-gateway", Host: o.NodeName}),
		prober:   newProber(o.ProbeInterval),
		pubKey:   key,
		kick:     make(chan struct{}, 1),
		now:      time.Now,
		conns:    map[string]mcnetv1.Connection{},
	}
	g.ready.Set(errors.New("starting: no Reconcile has finished yet"))
	g.prober.changed = g.trigger
	g.elector = election.New(log, o.electionConfig(), leaseKube, g.trigger, g.metrics.leaseKept.Inc)
	g.role = g.elector.Role
	return g, nil
}

func (g *Gateway) trigger() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

// run starts the watches, the probe socket, metrics, liveness, the election and the
// prober, then reconciles until ctx ends and shuts down.
func (g *Gateway) run(ctx context.Context) error {
	defer g.events.Shutdown()
	defer g.prober.close()
	// Answer remote gateways' probes from the start, before the caches sync: after a
	// restart the cables are still in the kernel, and the remotes' probes pass them.
	g.listenEarly(ctx)
	stopCache, err := g.watch(ctx)
	defer stopCache()
	if err != nil {
		return err
	}
	g.seed(ctx)
	if g.opts.MetricsBindAddress != "" && g.opts.MetricsBindAddress != "0" {
		srv := &http.Server{Addr: g.opts.MetricsBindAddress, Handler: promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", g.opts.MetricsBindAddress)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}
	stopProbes, err := healthz.Serve(g.opts.ProbeAddress, healthz.Handler(g.ready.Check))
	if err != nil {
		return fmt.Errorf("serve health probes (--health-probe-bind-address): %w", err)
	}
	defer stopProbes()
	g.elector.RunLiveness(ctx, g.kube.CoreV1().Secrets(g.opts.Namespace))
	leCtx, stopLE := context.WithCancel(ctx)
	defer stopLE()
	leDone := make(chan struct{})
	go func() {
		defer close(leDone)
		g.elector.Run(leCtx)
	}()

	g.log.Info("Gateway started", "node", g.opts.NodeName, "cluster", g.local.ClusterID, "cable", g.local.Cable, "publicKey", g.pubKey.String())
	// The prober sends on its own goroutine and timer and calls for a reconcile when a
	// probe is lost or a failing remote answers.
	go g.prober.run(ctx)
	req := reconcile.Request{NamespacedName: client.ObjectKey{Namespace: g.opts.Namespace, Name: g.opts.NodeName}}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			// Decide while still renewing, then stop the election and hand the Lease
			// over at once (it lasts only LeaseDuration).
			uninstall := agent.Uninstalling(ctx, g.kube, g.opts.Namespace, DaemonSetName)
			restart := !uninstall && election.Restarting(ctx, g.log, g.kube, g.opts.Namespace, DaemonSetName, g.opts.NodeName)
			stopLE()
			<-leDone
			g.elector.HandOver(ctx, restart)
			return g.shutdown(ctx, restart, uninstall)
		case <-g.kick:
		case <-timer.C:
		}
		start := g.now()
		res, err := g.Reconcile(logr.NewContext(ctx, g.log), req)
		if err != nil {
			g.log.Error(err, "Reconcile failed")
		}
		g.ready.Set(readiness(err, g.applyErr))
		// RequeueAfter counts from the start of the Reconcile, so the heartbeat keeps
		// its pace however long an apply takes; errors are retried then too: what failed
		// is a cache read or the API server, repaired by the next event or a later try.
		after := res.RequeueAfter
		if after <= 0 || after > g.opts.ProbeInterval {
			after = g.opts.ProbeInterval
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(0, after-g.now().Sub(start)))
	}
}

// readiness is why the gateway is not ready after a Reconcile: its error, or the
// kernel's refusal of the state it applied (which the Reconcile reports on the
// Gateway's Ready condition rather than returning).
func readiness(reconcileErr, applyErr error) error {
	switch {
	case reconcileErr != nil:
		return reconcileErr
	case applyErr != nil:
		return fmt.Errorf("apply the kernel state: %w", applyErr)
	}
	return nil
}

// listenEarly opens the probe socket on this node's health-check address, read
// straight from the API server (one GET, not the caches' lists). When it cannot be
// read, the first Reconcile opens the socket.
func (g *Gateway) listenEarly(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	node, err := g.kube.CoreV1().Nodes().Get(rctx, g.opts.NodeName, metav1.GetOptions{})
	if err != nil {
		g.log.V(1).Info("Cannot read the node before the caches sync; probes are answered after the first Reconcile", "error", err.Error())
		return
	}
	hcs, err := agent.HealthCheckIPs(node)
	if err != nil {
		return // the Reconcile reports it
	}
	g.listenHealth(ctx, hcs)
	g.log.Info("Answering health probes", "addresses", hcs)
}

// watch reconciles on every change of this cluster's Endpoints, the fleet table (a
// change in Git reaches the cables without a restart), the Gateway objects, the Nodes
// (its own, the Lease holder's) and a new holder of the gateway Lease, and waits for
// the cache to sync. The cache outlives ctx, for the shutdown, until stop is called.
func (g *Gateway) watch(ctx context.Context) (stop func(), err error) {
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	go func() { _ = g.cache.Start(cctx) }()
	for _, obj := range []client.Object{&mcnetv1.Endpoint{}, &mcnetv1.Fleet{}, &mcnetv1.Gateway{}, &corev1.Node{}, &coordinationv1.Lease{}} {
		inf, err := g.cache.GetInformer(ctx, obj)
		if err != nil {
			return stop, fmt.Errorf("informer: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { g.trigger() },
			UpdateFunc: func(old, cur any) {
				if relevantUpdate(old, cur) {
					g.trigger()
				}
			},
			DeleteFunc: func(any) { g.trigger() },
		}); err != nil {
			return stop, err
		}
	}
	if !g.cache.WaitForCacheSync(ctx) {
		return stop, errors.New("cache did not sync")
	}
	return stop, nil
}

// relevantUpdate drops the gateway Lease's renewals (every RetryPeriod): only a new
// holder matters to the reconciler, and the election reports that too.
func relevantUpdate(old, cur any) bool {
	o, ok := old.(*coordinationv1.Lease)
	if !ok {
		return true
	}
	c, ok := cur.(*coordinationv1.Lease)
	return !ok || ptrString(o.Spec.HolderIdentity) != ptrString(c.Spec.HolderIdentity)
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
