package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// resync re-applies an unchanged state, repairing what someone else changed.
const resync = 30 * time.Second

// Reconcile makes this gateway node match its role and the view: the role → publish
// the Endpoint → build the state → apply → read the prober's stats → the connections;
// the Gateway status is patched on the way out, Ready last. A standby routes its node
// to the active gateway instead. It asks to run again every probe interval: that
// renews the status (its heartbeat) and repairs drift.
func (g *Gateway) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	res := reconcile.Result{RequeueAfter: g.opts.ProbeInterval}
	v, err := g.view(ctx)
	if err != nil {
		return res, err
	}
	var st statusPatch
	defer g.patchStatus(ctx, &st)
	if !v.leading {
		g.standBy(ctx, v, &st)
		return res, nil
	}
	g.noteActive(ctx)
	addrs, err := g.nodeAddrs(v.node)
	if err != nil {
		return res, fmt.Errorf("determine the gateway's addresses: %w", err)
	}
	spec := agent.LocalEndpoint(g.local, g.opts.NodeName, addrs, g.pubKey)
	// Endpoint first: remote clusters start switching to this gateway while the
	// cables come up.
	if err := g.publishEndpoint(ctx, spec); err != nil {
		g.log.Error(err, "Cannot publish the Endpoint")
	}
	// Only the active gateway terminates the intra-cluster VXLAN, so only it needs
	// the cluster's node addresses; read from the cache without copying each Node.
	var nodes corev1.NodeList
	if err := g.client.List(ctx, &nodes, client.UnsafeDisableDeepCopy); err != nil {
		return res, fmt.Errorf("list Nodes: %w", err)
	}
	state, bad := g.buildState(v, addrs, agent.ClusterNodeAddrs(nodes.Items), &st)
	g.apply(ctx, state)
	if g.elector.Serve(true) {
		g.log.Info("Answering standbys on the liveness port", "port", g.opts.livenessPort())
	}
	r := g.probe(ctx, v, bad, addrs)
	g.connections(ctx, v.table, r, &st)
	st.ha, st.endpoint = mcnetv1.HAActive, &spec
	return res, nil
}

// view is what a Reconcile reads: the role from the election, the rest from the cache.
type view struct {
	leading bool
	leader  string
	node    *corev1.Node
	eps     []mcnetv1.Endpoint
	table   *membership.Table
}

// view reads the role, this node, the Endpoints and the fleet table, and points the
// liveness check at the Lease holder.
func (g *Gateway) view(ctx context.Context) (view, error) {
	var v view
	v.leading, v.leader = g.role()
	v.node = &corev1.Node{}
	if err := g.client.Get(ctx, client.ObjectKey{Name: g.opts.NodeName}, v.node); err != nil {
		return v, fmt.Errorf("read own Node: %w", err)
	}
	var eps mcnetv1.EndpointList
	if err := g.client.List(ctx, &eps, client.InNamespace(g.opts.Namespace)); err != nil {
		return v, fmt.Errorf("list Endpoints: %w", err)
	}
	v.eps = eps.Items
	table, err := membership.Load(ctx, g.client, g.local.Fleet)
	if msg := errString(err); msg != g.tableErr {
		g.tableErr = msg
		if err != nil {
			g.log.Error(err, "No remote cluster is trusted without the fleet table")
		} else {
			g.log.Info("Read the fleet table", "fleet", table.Name(), "members", len(table.Names()))
		}
	}
	v.table = table
	g.watchHolder(ctx, v.leader)
	return v, nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
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
	// The previous process stopped for a restart (it extended its status over the
	// grace) while this one was not running: a remote that restarted meanwhile, as a
	// fleet-wide rollout from one Git commit does everywhere at once, announced it to
	// nobody. Its VXLAN cable stayed in both kernels, so hold those connections as if
	// announced, until the remote answers this process or the grace runs out.
	now := g.now()
	if g.wasActive && g.opts.RestartGrace > 0 && gw.Status.ExpireTime != nil && now.Before(gw.Status.ExpireTime.Time) {
		var held []string
		for _, c := range gw.Status.Connections {
			if c.Cable == mcnetv1.CableVXLAN && c.Status == mcnetv1.Connected {
				held = append(held, c.Cluster)
			}
		}
		g.prober.holdOnStart(now, g.opts.RestartGrace, held)
	}
}

// noteActive says so, once, when this process becomes the active gateway.
func (g *Gateway) noteActive(ctx context.Context) {
	if !g.wasActive {
		g.wasActive = true
		g.log.Info("Became the active gateway")
		g.event(ctx, corev1.EventTypeNormal, ReasonBecameActive, fmt.Sprintf("Node %s is the active gateway of cluster %s", g.opts.NodeName, g.local.ClusterID))
	}
}

// standBy routes this node like any other to the active gateway, and reports
// passive. Nothing changes until another node holds the Lease. Right after a start
// the holder is not known yet (or is still this node, which will renew); a gateway
// that merely cannot renew (its API server is away) keeps its cables, since nobody
// else can have taken over, and traffic keeps flowing.
func (g *Gateway) standBy(ctx context.Context, v view, st *statusPatch) {
	if v.leader == "" || v.leader == g.opts.NodeName {
		return
	}
	if g.elector.Serve(false) {
		g.log.Info("No longer answering standbys on the liveness port", "leader", v.leader)
	}
	if g.wasActive {
		g.wasActive = false
		g.log.Info("No longer the active gateway", "leader", v.leader)
		g.event(ctx, corev1.EventTypeNormal, ReasonBecamePassive, fmt.Sprintf("Node %s stands by; active gateway: %s", g.opts.NodeName, v.leader))
	}
	g.prober.setTargets(nil)
	g.conns = map[string]mcnetv1.Connection{}
	g.metrics.set(false, nil)
	var n corev1.Node
	if err := g.client.Get(ctx, client.ObjectKey{Name: v.leader}, &n); err == nil {
		if ip, ok := agent.InternalIP(&n); ok {
			state, _, _ := agent.BuildState(g.local, v.table, v.eps, nil, ip)
			g.apply(ctx, state)
		}
	}
	g.standbyCond = g.livenessCondition(v.leader)
	st.ha = mcnetv1.HAPassive
	st.write = g.gwObj == nil || g.gwObj.Status.HAStatus != mcnetv1.HAPassive || len(g.gwObj.Status.Connections) > 0 ||
		!sameCondition(g.gwObj.Status.Conditions, g.standbyCond) || g.heartbeatDue(g.now())
}

// buildState is the active gateway's desired state: a cable to every remote the
// fleet table vouches for. It returns the members left out, and why; what remotes
// publish outside their allocation is reported on the status.
func (g *Gateway) buildState(v view, addrs agent.NodeAddrs, clusterNodes []netip.Addr, st *statusPatch) (dataplane.State, map[string]error) {
	state, bad, rejected := agent.BuildState(g.local, v.table, v.eps, agent.GatewayPorts(g.local, addrs.HealthCheck, clusterNodes), netip.Addr{})
	if changed, ev := g.noteRejections(rejected); changed {
		st.write = true
		if ev != nil {
			st.after = append(st.after, *ev)
		}
	}
	return state, bad
}

// apply drives the dataplane when the state changed, and every resync to repair drift.
func (g *Gateway) apply(ctx context.Context, s dataplane.State) {
	now := g.now()
	if g.applied != nil && g.applyErr == nil && reflect.DeepEqual(*g.applied, s) && now.Sub(g.appliedAt) < resync {
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

// remotes is what the active gateway knows of each member of the fleet: what it
// publishes, whether it was left out of the state, where and how its gateway answers
// probes, and the cable to it.
type remotes struct {
	endpoints map[string]*mcnetv1.EndpointSpec
	bad       map[string]error
	targets   map[string]netip.AddrPort
	probes    map[string]ProbeStats
	cables    map[string]*dataplane.CableStatus
	at        time.Time // when probes was read
}

// probe points the prober at every member's health-check address and reads what it
// measured on its own goroutine, and the cables' counters. The stats are read after
// the publish and apply, whose time no RTT includes.
func (g *Gateway) probe(ctx context.Context, v view, bad map[string]error, addrs agent.NodeAddrs) remotes {
	r := remotes{endpoints: map[string]*mcnetv1.EndpointSpec{}, bad: bad, targets: map[string]netip.AddrPort{}, cables: map[string]*dataplane.CableStatus{}}
	for _, ep := range agent.RemoteEndpoints(g.local.ClusterID, v.eps) {
		if _, member := v.table.Member(ep.Spec.ClusterID); !member {
			continue
		}
		r.endpoints[ep.Spec.ClusterID] = ep.Spec.DeepCopy()
		if _, isBad := bad[ep.Spec.ClusterID]; isBad {
			continue
		}
		for _, s := range ep.Spec.HealthCheckIPs {
			if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
				if a, ok := agent.ReachHealthCheck(v.table, ep.Spec.ClusterID, a); ok {
					r.targets[ep.Spec.ClusterID] = netip.AddrPortFrom(a, uint16(g.opts.healthCheckPort()))
					break
				}
			}
		}
	}
	g.listenHealth(ctx, addrs.HealthCheck)
	g.prober.setTargets(r.targets)
	r.at = g.now()
	r.probes = g.prober.stats(r.at)
	if cs, err := g.dp.Stats(ctx); err == nil {
		for i := range cs {
			r.cables[cs[i].ClusterID] = &cs[i]
		}
	}
	return r
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

// connections computes every member's connection from what was observed, records an
// Event on each transition and updates the metrics. Every member of the fleet table
// has a connection entry: members without an Endpoint show up as errors instead of
// silently missing, and nothing outside the table gets one, whatever the broker holds.
func (g *Gateway) connections(ctx context.Context, table *membership.Table, r remotes, st *statusPatch) {
	conns := map[string]mcnetv1.Connection{}
	changed := false
	for _, c := range table.Names() {
		if c == g.local.ClusterID {
			continue
		}
		in := ConnInput{Cluster: c, Endpoint: r.endpoints[c], EndpointErr: r.bad[c], ApplyErr: g.applyErr, Cable: r.cables[c], Probe: r.probes[c]}
		if t, ok := r.targets[c]; ok {
			in.ProbeTarget = t.String()
		}
		var prev *mcnetv1.Connection
		if p, ok := g.conns[c]; ok {
			prev = &p
		}
		next, ev := NextConnection(prev, in, r.at)
		if prev == nil || prev.Status != next.Status || prev.Message != next.Message || !sameEndpoint(prev.Endpoint, next.Endpoint) {
			changed = true
		}
		// A restarted gateway seeded from its last status reports no new connections.
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
	st.conns = sortedConns(conns)
	g.metrics.set(true, st.conns)
	st.write = st.write || changed || g.heartbeatDue(r.at)
}
