// Package gateway is the mcnet gateway engine. One gateway per cluster is active,
// chosen by a Lease: it publishes the cluster's Endpoint, drives the dataplane to have
// a cable to every remote cluster, probes each remote gateway through its cable and
// reports the connections in its Gateway object, Events and metrics. The others stand
// by warm (informers synced, WireGuard key loaded, probe socket open) and route their
// own node's remote traffic to the active gateway, like any other node.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/controllers/gateway/election"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/version"
)

// DaemonSetName is the gateway's DaemonSet, checked on shutdown to tell an uninstall
// from a restart.
const DaemonSetName = "mcnet-gateway"

// Options configure a gateway.
type Options struct {
	agent.Common
	MetricsBindAddress string
	// Lease timings: a standby takes over at most LeaseDuration+RetryPeriod after the
	// active gateway stops renewing; the active one gives up after RenewDeadline.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// RestartGrace is how long the Lease is held for a restarting active gateway: a
	// SIGTERM that is not an uninstall renews it once for this long instead of
	// releasing it, and the restarted process takes it back at once.
	RestartGrace time.Duration
	// ProbeInterval is how often each remote gateway is probed.
	ProbeInterval time.Duration
	// StatusInterval is how often the Gateway status is renewed when nothing changed
	// (its heartbeat, status.renewTime, with fresh RTT figures); changes are written at
	// once. At most mcnetv1.GatewayHeartbeat: readers expire a status
	// mcnetv1.GatewayExpiry after its renewal.
	StatusInterval time.Duration
}

// AddFlags registers the gateway's flags, the shared ones included.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.Common.AddFlags(fs)
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":9452", "address of the Prometheus metrics endpoint (0 disables it)")
	fs.DurationVar(&o.LeaseDuration, "lease-duration", time.Second, "gateway Lease duration (whole seconds: the Lease counts seconds)")
	fs.DurationVar(&o.RenewDeadline, "lease-renew-deadline", 800*time.Millisecond, "how long the active gateway retries renewing before it steps down")
	fs.DurationVar(&o.RetryPeriod, "lease-retry-period", 200*time.Millisecond, "how often the Lease is renewed or tried")
	fs.DurationVar(&o.RestartGrace, "lease-restart-grace", 15*time.Second, "how long a restarting active gateway keeps the Lease for its next process (0 releases it on every stop)")
	fs.DurationVar(&o.ProbeInterval, "probe-interval", time.Second, "health probe interval per remote gateway")
	fs.DurationVar(&o.StatusInterval, "status-interval", mcnetv1.GatewayHeartbeat, "how often the Gateway status is renewed (its heartbeat, with fresh RTT figures); at most "+mcnetv1.GatewayHeartbeat.String())
}

// validateLease checks the Lease timings: other candidates see the duration in whole
// seconds, and the holder must give up before they take over.
func (o *Options) validateLease() error {
	switch {
	case o.LeaseDuration < time.Second || o.LeaseDuration%time.Second != 0:
		return fmt.Errorf("--lease-duration=%s: must be a whole number of seconds (the Lease records seconds), e.g. 1s", o.LeaseDuration)
	case o.RenewDeadline <= 0 || o.RenewDeadline >= o.LeaseDuration:
		return fmt.Errorf("--lease-renew-deadline=%s: must be shorter than --lease-duration=%s, or the active gateway keeps acting after a standby took over", o.RenewDeadline, o.LeaseDuration)
	case o.RetryPeriod <= 0 || o.RetryPeriod >= o.RenewDeadline:
		return fmt.Errorf("--lease-retry-period=%s: must be shorter than --lease-renew-deadline=%s", o.RetryPeriod, o.RenewDeadline)
	case o.StatusInterval <= 0 || o.StatusInterval > mcnetv1.GatewayHeartbeat:
		return fmt.Errorf("--status-interval=%s: must be positive and at most %s, or readers count this gateway dead between renewals", o.StatusInterval, mcnetv1.GatewayHeartbeat)
	}
	return nil
}

// electionConfig is the Lease election's part of the options.
func (o *Options) electionConfig() election.Config {
	return election.Config{
		Namespace: o.Namespace, Identity: o.NodeName,
		LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod,
		RestartGrace: o.RestartGrace, LivenessPort: o.livenessPort(),
	}
}

// healthCheckPort is the UDP port gateways of the fleet answer probes on.
func (o *Options) healthCheckPort() int { return int(o.Config.Gateway.HealthCheckPort) }

// livenessPort is the UDP port on the node's address where the active gateway answers
// its standbys (0 disables: Lease timing alone decides failovers).
func (o *Options) livenessPort() int {
	if p := o.Config.Gateway.LivenessPort; p != nil {
		return int(*p)
	}
	return 0
}

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
	if err := o.Complete(); err != nil {
		return err
	}
	if err := o.validateLease(); err != nil {
		return err
	}
	local, err := o.Local()
	if err != nil {
		return err
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	dp, err := dataplane.New(o.DataplaneConfig())
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

// Gateway is one gateway process.
type Gateway struct {
	opts     Options
	local    agent.Local
	log      logr.Logger
	cache    cache.Cache
	client   client.Client
	direct   client.Reader // uncached, for when the cache lags
	kube     kubernetes.Interface
	dp       dataplaneAPI
	metrics  *metrics
	recorder record.EventRecorder
	events   record.EventBroadcaster
	prober   *prober
	elector  *election.Elector
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
	now                func() time.Time

	// Owned by the loop goroutine.
	wasActive bool
	applied   *dataplane.State
	appliedAt time.Time
	applyErr  error
	// remap is what the kernel's remap chains translate after the last apply.
	remap      []mcnetv1.RemapStatus
	badRemotes map[string]error
	conns      map[string]mcnetv1.Connection
	gwObj      *mcnetv1.Gateway
	statusAt   time.Time
	seeded     bool
}

func newGateway(ctx context.Context, log logr.Logger, o Options, local agent.Local, cfg *rest.Config, dp dataplaneAPI) (*Gateway, error) {
	scheme := agent.Scheme()
	c, cl, err := o.NewCache(cfg)
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
	g.prober.changed = g.trigger
	g.elector = election.New(log, o.electionConfig(), leaseKube, g.trigger, g.metrics.leaseKept.Inc)
	return g, nil
}

func (g *Gateway) trigger() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *Gateway) run(ctx context.Context) error {
	log := g.log
	defer g.events.Shutdown()
	defer g.prober.close()

	cctx, stopCache := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCache()
	go func() { _ = g.cache.Start(cctx) }()
	// The fleet table too: a change in Git reaches the cables without a restart.
	for _, obj := range []client.Object{&mcnetv1.Endpoint{}, &mcnetv1.Fleet{}, &mcnetv1.Gateway{}, &corev1.Node{}} {
		inf, err := g.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { g.trigger() },
			UpdateFunc: func(any, any) { g.trigger() },
			DeleteFunc: func(any) { g.trigger() },
		}); err != nil {
			return err
		}
	}
	if !g.cache.WaitForCacheSync(ctx) {
		return errors.New("cache did not sync")
	}
	g.seed(ctx)
	// Answer remote gateways' probes from the start: a restarted active gateway must
	// not miss them while it takes the Lease back.
	var node corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: g.opts.NodeName}, &node); err == nil {
		if hcs, err := agent.HealthCheckIPs(&node); err == nil {
			g.listenHealth(ctx, hcs)
		}
	}

	if g.opts.MetricsBindAddress != "" && g.opts.MetricsBindAddress != "0" {
		srv := &http.Server{Addr: g.opts.MetricsBindAddress, Handler: promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		ln, err := net.Listen("tcp", g.opts.MetricsBindAddress)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		go func() { _ = srv.Serve(ln) }()
		defer srv.Close()
	}

	g.elector.RunLiveness(ctx, g.kube.CoreV1().Secrets(g.opts.Namespace))

	leCtx, stopLE := context.WithCancel(ctx)
	defer stopLE()
	leDone := make(chan struct{})
	go func() {
		defer close(leDone)
		g.elector.Run(leCtx)
	}()

	log.Info("Gateway started", "node", g.opts.NodeName, "cluster", g.local.ClusterID, "cable", g.local.Cable, "publicKey", g.pubKey.String())
	// The prober sends on its own goroutine and timer and calls for a sync when a
	// probe is lost or a failing remote answers; everything else is synced once per
	// probe interval, or at once on an event.
	go g.prober.run(ctx)
	tick := time.NewTicker(g.opts.ProbeInterval)
	defer tick.Stop()
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
			g.sync(ctx)
		case <-tick.C:
			g.sync(ctx)
		}
	}
}

// seed starts from the Gateway status the previous process of this node wrote, so a
// restart reports no transitions and no flaps while the first probes are under way.
func (g *Gateway) seed(ctx context.Context) {
	var gw mcnetv1.Gateway
	if err := g.client.Get(ctx, client.ObjectKey{Namespace: g.opts.Namespace, Name: g.opts.NodeName}, &gw); err != nil {
		return
	}
	g.gwObj = gw.DeepCopy()
	g.wasActive = gw.Status.HAStatus == mcnetv1.HAActive
	for _, c := range gw.Status.Connections {
		g.conns[c.Cluster] = c
	}
}

// sync makes everything match the current role and view.
func (g *Gateway) sync(ctx context.Context) {
	leading, leader := g.elector.Role()
	var node corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: g.opts.NodeName}, &node); err != nil {
		g.log.Error(err, "Cannot read own Node")
		return
	}
	var eps mcnetv1.EndpointList
	if err := g.client.List(ctx, &eps, client.InNamespace(g.opts.Namespace)); err != nil {
		g.log.Error(err, "Cannot list Endpoints")
		return
	}
	table, err := membership.Load(ctx, g.client, g.local.Fleet)
	if msg := errString(err); msg != g.tableErr {
		g.tableErr = msg
		if err != nil {
			g.log.Error(err, "No remote cluster is trusted without the fleet table")
		} else {
			g.log.Info("Read the fleet table", "fleet", table.Name(), "members", len(table.Names()))
		}
	}
	g.watchHolder(ctx, leader)
	if leading {
		g.syncActive(ctx, &node, table, eps.Items)
	} else {
		g.syncPassive(ctx, leader, table, eps.Items)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// noteRejections logs when what remote clusters publish outside their allocation
// changes and keeps the RemotesWithinAllocation condition; it reports whether anything
// changed, and returns the Event to record once the Gateway exists.
func (g *Gateway) noteRejections(rejected []membership.Rejection) (bool, *Event) {
	summary := membership.Summary(rejected, 5)
	if summary == g.rejected && g.allocCond != nil {
		return false, nil
	}
	var ev *Event
	g.rejected = summary
	c := metav1.Condition{Type: mcnetv1.GatewayConditionRemotesInAllocation, Status: metav1.ConditionTrue, Reason: "WithinAllocation",
		Message: "every remote cluster publishes only what the fleet table allocates to it"}
	if len(rejected) > 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, mcnetv1.ReasonOutsideAllocation, "ignored: "+summary
		g.log.Info("Ignoring what remote clusters publish outside their allocation", "fleet", g.local.Fleet, "ignored", summary, "count", len(rejected))
		ev = &Event{corev1.EventTypeWarning, mcnetv1.ReasonOutsideAllocation, "Ignored: " + summary}
	} else if g.allocCond != nil {
		g.log.Info("Every remote cluster publishes only what its allocation holds again")
	}
	g.allocCond = &c
	return true, ev
}

// watchHolder points the liveness check at the Lease holder's node, unless that is
// this node.
func (g *Gateway) watchHolder(ctx context.Context, leader string) {
	if leader == "" || leader == g.opts.NodeName {
		g.elector.WatchHolder("", netip.Addr{})
		return
	}
	var n corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: leader}, &n); err != nil {
		g.elector.WatchHolder("", netip.Addr{})
		return
	}
	ip, _ := agent.InternalIP(&n)
	g.elector.WatchHolder(leader, ip)
}

func (g *Gateway) syncActive(ctx context.Context, node *corev1.Node, table *membership.Table, eps []mcnetv1.Endpoint) {
	now := g.now()
	if !g.wasActive {
		g.wasActive = true
		g.log.Info("Became the active gateway")
		g.event(ctx, corev1.EventTypeNormal, ReasonBecameActive, fmt.Sprintf("Node %s is the active gateway of cluster %s", g.opts.NodeName, g.local.ClusterID))
	}
	addrs, err := g.nodeAddrs(node)
	if err != nil {
		g.log.Error(err, "Cannot determine the gateway's addresses")
		return
	}
	spec := agent.LocalEndpoint(g.local, g.opts.NodeName, addrs, g.pubKey)
	// Endpoint first: remote clusters start switching to this gateway while the
	// cables come up.
	if err := g.publishEndpoint(ctx, spec); err != nil {
		g.log.Error(err, "Cannot publish the Endpoint")
	}
	state, bad, rejected := agent.BuildState(g.local, table, eps, agent.GatewayPorts(g.local, addrs.HealthCheck), netip.Addr{})
	g.badRemotes = bad
	rejectionsChanged, rejectionEvent := g.noteRejections(rejected)
	g.apply(ctx, state)
	if g.elector.Serve(true) {
		g.log.Info("Answering standbys on the liveness port", "port", g.opts.livenessPort())
	}

	targets := map[string]netip.AddrPort{}
	remotes := map[string]*mcnetv1.EndpointSpec{}
	for _, ep := range agent.RemoteEndpoints(g.local.ClusterID, eps) {
		if _, member := table.Member(ep.Spec.ClusterID); !member {
			continue
		}
		remotes[ep.Spec.ClusterID] = ep.Spec.DeepCopy()
		if _, isBad := bad[ep.Spec.ClusterID]; isBad {
			continue
		}
		for _, s := range ep.Spec.HealthCheckIPs {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				if a, ok := agent.ReachHealthCheck(table, ep.Spec.ClusterID, a); ok {
					targets[ep.Spec.ClusterID] = netip.AddrPortFrom(a, uint16(g.opts.healthCheckPort()))
					break
				}
			}
		}
	}
	g.listenHealth(ctx, addrs.HealthCheck)
	g.prober.setTargets(targets)
	// What the prober measured on its own goroutine, read now: the publish and apply
	// above took time that no RTT includes.
	now = g.now()
	stats := g.prober.stats(now)
	cables := map[string]*dataplane.CableStatus{}
	if cs, err := g.dp.Stats(ctx); err == nil {
		for i := range cs {
			cables[cs[i].ClusterID] = &cs[i]
		}
	}
	// Every member of the fleet table has a connection entry: members without an
	// Endpoint show up as errors instead of silently missing, and nothing outside the
	// table gets one, whatever the broker holds.
	names := map[string]bool{}
	for _, c := range table.Names() {
		if c != g.local.ClusterID {
			names[c] = true
		}
	}
	conns := map[string]mcnetv1.Connection{}
	changed := rejectionsChanged
	for c := range names {
		in := ConnInput{Cluster: c, Endpoint: remotes[c], EndpointErr: bad[c], ApplyErr: g.applyErr, Cable: cables[c], Probe: stats[c]}
		if t, ok := targets[c]; ok {
			in.ProbeTarget = t.String()
		}
		var prev *mcnetv1.Connection
		if p, ok := g.conns[c]; ok {
			prev = &p
		}
		next, ev := NextConnection(prev, in, now)
		if prev == nil || prev.Status != next.Status || prev.Message != next.Message || !sameEndpoint(prev.Endpoint, next.Endpoint) {
			changed = true
		}
		if ev != nil && !(prev == nil && next.Status == mcnetv1.Connected && !g.seeded) {
			g.event(ctx, ev.Type, ev.Reason, ev.Message)
			g.log.Info("Connection "+string(next.Status), "cluster", c, "message", next.Message)
		}
		conns[c] = next
	}
	if len(conns) != len(g.conns) {
		changed = true
	}
	g.conns = conns
	g.seeded = true
	list := sortedConns(conns)
	g.metrics.set(true, list)
	if changed || g.heartbeatDue(now) {
		g.writeStatus(ctx, mcnetv1.HAActive, &spec, list)
	}
	if ev := rejectionEvent; ev != nil {
		g.event(ctx, ev.Type, ev.Reason, ev.Message) // on the Gateway, which exists now
	}
}

// listenHealth opens the probe socket on the first IPv4 health-check address.
func (g *Gateway) listenHealth(ctx context.Context, hcs []netip.Addr) {
	for _, hc := range hcs {
		if hc.Is4() {
			if err := g.prober.listen(ctx, netip.AddrPortFrom(hc, uint16(g.opts.healthCheckPort()))); err != nil {
				g.log.Error(err, "Cannot probe")
			}
			return
		}
	}
}

func (g *Gateway) syncPassive(ctx context.Context, leader string, table *membership.Table, eps []mcnetv1.Endpoint) {
	// Nothing changes until another node holds the Lease. Right after a start the
	// holder is not known yet (or is still this node, which will renew); a gateway
	// that merely cannot renew (its API server is away) keeps its cables, since
	// nobody else can have taken over, and traffic keeps flowing.
	if leader == "" || leader == g.opts.NodeName {
		return
	}
	if g.elector.Serve(false) {
		g.log.Info("No longer answering standbys on the liveness port", "leader", leader)
	}
	if g.wasActive {
		g.wasActive = false
		g.log.Info("No longer the active gateway", "leader", leader)
		g.event(ctx, corev1.EventTypeNormal, ReasonBecamePassive, fmt.Sprintf("Node %s stands by; active gateway: %s", g.opts.NodeName, leader))
	}
	g.prober.setTargets(nil)
	g.conns = map[string]mcnetv1.Connection{}
	g.metrics.set(false, nil)
	// A standby is a normal node for routing: remote traffic goes to the active one.
	var n corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: leader}, &n); err == nil {
		if ip, ok := agent.InternalIP(&n); ok {
			state, _, _ := agent.BuildState(g.local, table, eps, nil, ip)
			g.apply(ctx, state)
		}
	}
	g.standbyCond = g.livenessCondition(leader)
	if g.gwObj == nil || g.gwObj.Status.HAStatus != mcnetv1.HAPassive || len(g.gwObj.Status.Connections) > 0 || !sameCondition(g.gwObj.Status.Conditions, g.standbyCond) ||
		g.heartbeatDue(g.now()) {
		g.writeStatus(ctx, mcnetv1.HAPassive, nil, nil)
	}
}

// apply drives the dataplane when the state changed, and every 30 s to repair drift.
func (g *Gateway) apply(ctx context.Context, s dataplane.State) {
	now := g.now()
	if g.applied != nil && g.applyErr == nil && reflect.DeepEqual(*g.applied, s) && now.Sub(g.appliedAt) < 30*time.Second {
		return
	}
	err := g.dp.Apply(logr.NewContext(ctx, g.log), s)
	if err != nil && (g.applyErr == nil || g.applyErr.Error() != err.Error()) {
		g.log.Error(err, "Dataplane apply failed")
		g.event(ctx, corev1.EventTypeWarning, ReasonApplyFailed, err.Error())
	}
	if err == nil && (g.applied == nil || !reflect.DeepEqual(*g.applied, s)) {
		g.log.Info("Applied dataplane state", "gateway", s.Gateway != nil, "activeGateway", s.ActiveGateway, "remotes", len(s.Remotes))
	}
	g.applied, g.appliedAt, g.applyErr = &s, now, err
	g.remap = readRemap(g.dp, g.log)
}

// nodeAddrs finds the addresses to publish: the public one (annotation or
// ExternalIP), the private one the node sends from towards it, the health-check one.
func (g *Gateway) nodeAddrs(node *corev1.Node) (agent.NodeAddrs, error) {
	var a agent.NodeAddrs
	var err error
	if a.HealthCheck, err = agent.HealthCheckIPs(node); err != nil {
		return a, err
	}
	if a.Public, err = agent.PublicIPs(node); err != nil {
		return a, err
	}
	for _, pub := range a.Public {
		if src, ok := sourceFor(pub); ok && !slices.Contains(a.Private, src) {
			a.Private = append(a.Private, src)
		}
	}
	if len(a.Private) == 0 {
		ip, ok := agent.InternalIP(node)
		if !ok {
			return a, fmt.Errorf("node %s has no InternalIP", node.Name)
		}
		a.Private = []netip.Addr{ip}
	}
	return a, nil
}

// sourceFor returns the local address the kernel picks to send to dst: dst itself
// when it is local (no NAT), else the node's side of a NAT. Connecting a UDP socket
// sends nothing.
func sourceFor(dst netip.Addr) (netip.Addr, bool) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	ap := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return ap.Addr().Unmap(), true
}

func (g *Gateway) publishEndpoint(ctx context.Context, spec mcnetv1.EndpointSpec) error {
	key := client.ObjectKey{Namespace: g.opts.Namespace, Name: g.local.ClusterID}
	var ep mcnetv1.Endpoint
	err := g.client.Get(ctx, key, &ep)
	for retried := false; ; retried = true {
		switch {
		case apierrors.IsNotFound(err):
			ep = mcnetv1.Endpoint{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
			ep.Labels, ep.Spec = map[string]string{mcnetv1.ClusterLabel: g.local.ClusterID}, spec
			if err = g.client.Create(ctx, &ep); err != nil {
				err = fmt.Errorf("create Endpoint: %w", err)
			}
		case err != nil:
			return err
		case apiequality.Semantic.DeepEqual(ep.Spec, spec) && ep.Labels[mcnetv1.ClusterLabel] == g.local.ClusterID:
			return nil
		default:
			ep.Spec = spec
			if ep.Labels == nil {
				ep.Labels = map[string]string{}
			}
			ep.Labels[mcnetv1.ClusterLabel] = g.local.ClusterID
			if err = g.client.Update(ctx, &ep); err != nil {
				err = fmt.Errorf("update Endpoint: %w", err)
			}
		}
		if err == nil {
			g.log.Info("Published Endpoint", "privateIPs", spec.PrivateIPs, "publicIPs", spec.PublicIPs)
			return nil
		}
		if retried || !(apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) {
			return err
		}
		// The cache lags behind the API server (for up to a minute after an outage,
		// while informers relist): once more on the live object.
		err = g.direct.Get(ctx, key, &ep)
	}
}

// writeStatus creates this node's Gateway if needed and writes its status.
func (g *Gateway) writeStatus(ctx context.Context, ha mcnetv1.HAStatus, ep *mcnetv1.EndpointSpec, conns []mcnetv1.Connection) {
	if g.gwObj == nil {
		gw := &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{
			Namespace: g.opts.Namespace, Name: g.opts.NodeName,
			Labels: map[string]string{mcnetv1.ClusterLabel: g.local.ClusterID},
		}}
		owner, ownerErr := g.nodeOwner(ctx)
		if owner != nil {
			gw.OwnerReferences = []metav1.OwnerReference{*owner}
		}
		err := g.client.Create(ctx, gw)
		if apierrors.IsAlreadyExists(err) {
			err = g.client.Get(ctx, client.ObjectKeyFromObject(gw), gw)
			if err == nil && owner != nil && !slices.ContainsFunc(gw.OwnerReferences, func(r metav1.OwnerReference) bool { return r.UID == owner.UID }) {
				// Written by an older version, or for a node of the same name that was
				// removed and joined again: owned by this node from now on.
				gw.OwnerReferences = append(slices.DeleteFunc(gw.OwnerReferences, func(r metav1.OwnerReference) bool { return r.Kind == "Node" }), *owner)
				err = g.client.Update(ctx, gw)
			}
		}
		if err != nil {
			g.log.Error(errors.Join(err, ownerErr), "Cannot create the Gateway object")
			return
		}
		g.gwObj = gw
	}
	base := g.gwObj.DeepCopy()
	gw := g.gwObj.DeepCopy()
	now := g.now()
	gw.Status = mcnetv1.GatewayStatus{
		HAStatus: ha, Cable: g.local.Cable, Version: version.Version,
		LocalEndpoint: ep, Connections: conns,
		Conditions:         readyCondition(base.Status.Conditions, ha, conns, g.applyErr, now),
		ObservedGeneration: gw.Generation,
		RenewTime:          &metav1.MicroTime{Time: now},
		ExpireTime:         &metav1.MicroTime{Time: now.Add(mcnetv1.GatewayExpiry)},
	}
	if ha == mcnetv1.HAActive {
		gw.Status.Remap = g.remap
	}
	if c := g.standbyCond; c != nil && ha == mcnetv1.HAPassive {
		gw.Status.Conditions = append(gw.Status.Conditions, keepTransition(base.Status.Conditions, *c, g.now()))
	}
	if c := g.allocCond; c != nil && ha == mcnetv1.HAActive {
		gw.Status.Conditions = append(gw.Status.Conditions, keepTransition(base.Status.Conditions, *c, g.now()))
	}
	if err := g.client.Status().Patch(ctx, gw, client.MergeFrom(base)); err != nil {
		if apierrors.IsNotFound(err) {
			g.gwObj = nil // deleted under us: create again next time
		}
		g.log.Error(err, "Cannot write the Gateway status")
		return
	}
	g.gwObj = gw
	g.statusAt = g.now()
}

// heartbeatDue says whether the status must be renewed now. Syncs come about once a
// probe interval, with jitter: renewing on each that is at least half a status
// interval after the last keeps renewals no more than about one interval apart.
func (g *Gateway) heartbeatDue(now time.Time) bool {
	return now.Sub(g.statusAt) >= g.opts.StatusInterval/2
}

// extendStatus pushes the Gateway status's expireTime d ahead, changing nothing else.
func (g *Gateway) extendStatus(ctx context.Context, d time.Duration) {
	base := g.gwObj.DeepCopy()
	gw := g.gwObj.DeepCopy()
	gw.Status.ExpireTime = &metav1.MicroTime{Time: g.now().Add(d)}
	if err := g.client.Status().Patch(ctx, gw, client.MergeFrom(base)); err != nil {
		g.log.Error(err, "Cannot extend the Gateway status over the restart")
		return
	}
	g.gwObj = gw
}

// nodeOwner returns an owner reference to this gateway's Node, so the garbage
// collector removes the Gateway object when the node leaves the cluster.
func (g *Gateway) nodeOwner(ctx context.Context) (*metav1.OwnerReference, error) {
	var n corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: g.opts.NodeName}, &n); err != nil {
		return nil, fmt.Errorf("read node %s for the Gateway's owner: %w", g.opts.NodeName, err)
	}
	return &metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}, nil
}

// readyCondition is Ready=True when every connection is connected (or, on a standby,
// always): a Gateway whose cables all pass traffic.
func readyCondition(old []metav1.Condition, ha mcnetv1.HAStatus, conns []mcnetv1.Connection, applyErr error, now time.Time) []metav1.Condition {
	c := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Standby", Message: "Standing by for the active gateway"}
	if ha == mcnetv1.HAActive {
		c.Reason, c.Message = "AllConnected", fmt.Sprintf("%d of %d connections connected", countConnected(conns), len(conns))
		switch {
		case applyErr != nil:
			c.Status, c.Reason, c.Message = metav1.ConditionFalse, ReasonApplyFailed, applyErr.Error()
		case countConnected(conns) < len(conns):
			c.Status, c.Reason = metav1.ConditionFalse, "ConnectionsDown"
		}
	}
	return []metav1.Condition{keepTransition(old, c, now)}
}

// livenessReachWindow is how long the active gateway may not answer before a standby
// reports it unreachable (it asks ten times a second).
const livenessReachWindow = 5 * time.Second

// livenessCondition is the standby's ActiveGatewayReachable condition, nil when
// nothing can be said (liveness disabled, the holder unknown, just started).
func (g *Gateway) livenessCondition(holder string) *metav1.Condition {
	ok, known := g.elector.HolderReachable(holder, livenessReachWindow)
	if !known {
		return nil
	}
	if ok {
		return &metav1.Condition{Type: mcnetv1.GatewayConditionActiveReachable, Status: metav1.ConditionTrue, Reason: "Answers",
			Message: fmt.Sprintf("active gateway %s answers on its liveness port (UDP %d)", holder, g.opts.livenessPort())}
	}
	return &metav1.Condition{Type: mcnetv1.GatewayConditionActiveReachable, Status: metav1.ConditionFalse, Reason: "NoAnswer",
		Message: fmt.Sprintf("active gateway %s does not answer on UDP %d of its node: if its Lease renewals are ever late, this standby takes over from a working gateway; allow UDP %d between gateway nodes", holder, g.opts.livenessPort(), g.opts.livenessPort())}
}

// sameCondition says whether conds holds the standby condition c with the same status,
// reason and message (both absent counts as the same).
func sameCondition(conds []metav1.Condition, c *metav1.Condition) bool {
	o := meta.FindStatusCondition(conds, mcnetv1.GatewayConditionActiveReachable)
	if c == nil || o == nil {
		return c == nil && o == nil
	}
	return o.Status == c.Status && o.Reason == c.Reason && o.Message == c.Message
}

// keepTransition returns c with the transition time of the same condition in old
// when its status did not change, else now.
func keepTransition(old []metav1.Condition, c metav1.Condition, now time.Time) metav1.Condition {
	for _, o := range old {
		if o.Type == c.Type && o.Status == c.Status {
			c.LastTransitionTime = o.LastTransitionTime
		}
	}
	if c.LastTransitionTime.IsZero() {
		c.LastTransitionTime = metav1.NewTime(now.Truncate(time.Second))
	}
	return c
}

func countConnected(conns []mcnetv1.Connection) int {
	n := 0
	for _, c := range conns {
		if c.Status == mcnetv1.Connected {
			n++
		}
	}
	return n
}

func sortedConns(m map[string]mcnetv1.Connection) []mcnetv1.Connection {
	out := make([]mcnetv1.Connection, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b mcnetv1.Connection) int {
		switch {
		case a.Cluster < b.Cluster:
			return -1
		case a.Cluster > b.Cluster:
			return 1
		}
		return 0
	})
	return out
}

func (g *Gateway) event(ctx context.Context, typ, reason, msg string) {
	obj := g.gwObj
	if obj == nil {
		var gw mcnetv1.Gateway
		if err := g.client.Get(ctx, client.ObjectKey{Namespace: g.opts.Namespace, Name: g.opts.NodeName}, &gw); err != nil {
			return
		}
		obj = &gw
	}
	g.recorder.Event(obj, typ, reason, msg)
}

// shutdown runs after handOver. A restart keeps the kernel state and the Gateway
// status (still active, connections as the next process's starting point); otherwise
// the gateway reports passive and, when it is being uninstalled, removes its kernel
// state.
func (g *Gateway) shutdown(ctx context.Context, restart, uninstall bool) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	switch {
	case restart:
		// The status stays true for the next process through the restart grace, as the
		// Lease does; if no process comes back, readers stop believing it then.
		if g.gwObj != nil && g.opts.RestartGrace > 0 {
			g.extendStatus(sctx, g.opts.RestartGrace)
		}
		g.log.Info("Gateway stopped for a restart; Lease, status and kernel state kept for the next start")
		return nil
	case uninstall:
		g.log.Info("Gateway DaemonSet removed: cleaning up the node's kernel state")
		return g.dp.Cleanup(sctx)
	}
	if g.wasActive {
		g.writeStatus(sctx, mcnetv1.HAPassive, nil, sortedConns(g.conns))
	}
	g.log.Info("Gateway stopped; kernel state kept")
	return nil
}
