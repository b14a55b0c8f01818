// Package routeagent is the mcnet route agent: on every node that is not a gateway
// node it routes the remote clusters' networks to the cluster's active gateway (the
// holder of the gateway Lease) and follows it when it changes. On gateway nodes it
// does nothing: the gateway process there owns the node's mcnet kernel state, as the
// active gateway or, when standing by, as a normal node.
package routeagent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// DaemonSetName is the route agent's DaemonSet, checked on shutdown to tell an
// uninstall from a restart.
const DaemonSetName = "mcnet-route-agent"

// resync re-applies an unchanged state, repairing what someone else changed.
const resync = 30 * time.Second

// Options configure a route agent: what it shares with the gateway, nothing of its
// own. The gateway nodes, where it idles, are the AgentConfig's gateway.nodeSelector.
type Options struct {
	agent.Common
}

// AddFlags registers the agent's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) { o.Common.AddFlags(fs) }

// dataplaneAPI is what the agent needs of *dataplane.Dataplane.
type dataplaneAPI interface {
	Apply(ctx context.Context, s dataplane.State) error
	Cleanup(ctx context.Context) error
}

// Run runs the agent until ctx ends; on an uninstall it removes its kernel state.
func Run(ctx context.Context, log logr.Logger, o Options) error {
	if err := o.Complete(); err != nil {
		return err
	}
	local, err := o.Local()
	if err != nil {
		return err
	}
	sel := labels.SelectorFromSet(o.Config.Gateway.NodeSelector)
	cfg, err := o.RESTConfig()
	if err != nil {
		return err
	}
	dp, err := dataplane.New(o.DataplaneConfig())
	if err != nil {
		return err
	}
	defer dp.Close()
	a, err := newAgent(log, o, local, sel, cfg, dp)
	if err != nil {
		return err
	}
	// Benchmarks and diagnose ask this agent for measurements through NetworkTests.
	if err := o.ServeNetworkTests(ctx, log, cfg, mcnetv1.AgentRouteAgent); err != nil {
		return err
	}
	return a.run(ctx)
}

type router struct {
	opts   Options
	local  agent.Local
	sel    labels.Selector
	log    logr.Logger
	cache  cache.Cache
	client client.Client
	kube   kubernetes.Interface
	dp     dataplaneAPI
	kick   chan struct{}

	gatewayNode bool
	// rejected and tableErr are the last summary of what remotes publish outside
	// their allocation and the last fleet table error, so each is logged once.
	rejected, tableErr string
	applied            *dataplane.State
	appliedAt          time.Time
	applyErr           error
}

func newAgent(log logr.Logger, o Options, local agent.Local, sel labels.Selector, cfg *rest.Config, dp dataplaneAPI) (*router, error) {
	// Only the gateway Lease, whose holder is all the agent reads of it.
	c, cl, err := o.NewCache(cfg, map[client.Object]cache.ByObject{
		&coordinationv1.Lease{}: {Field: fields.OneTermEqualSelector("metadata.name", agent.LeaseName)},
	})
	if err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &router{opts: o, local: local, sel: sel, log: log, cache: c, client: cl, kube: kube, dp: dp, kick: make(chan struct{}, 1)}, nil
}

func (a *router) trigger() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func (a *router) run(ctx context.Context) error {
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	go func() { _ = a.cache.Start(cctx) }()
	for _, obj := range []client.Object{&mcnetv1.Endpoint{}, &mcnetv1.Fleet{}, &coordinationv1.Lease{}, &corev1.Node{}} {
		inf, err := a.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { a.trigger() },
			UpdateFunc: func(old, cur any) {
				if relevantUpdate(old, cur) {
					a.trigger()
				}
			},
			DeleteFunc: func(any) { a.trigger() },
		}); err != nil {
			return err
		}
	}
	if !a.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("cache did not sync")
	}
	a.log.Info("Route agent started", "node", a.opts.NodeName, "cluster", a.local.ClusterID)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return a.shutdown(ctx)
		case <-a.kick:
		case <-tick.C:
		}
		a.sync(ctx)
	}
}

// relevantUpdate tells the updates that can change the agent's routes from those that
// cannot: the active gateway renews its Lease every few hundred milliseconds and
// kubelets update their Nodes' status every few seconds; only a new holder, or a
// Node's labels or addresses, matter here. Without this filter every node of a cluster
// recomputed its state on every renewal.
func relevantUpdate(old, cur any) bool {
	switch o := old.(type) {
	case *coordinationv1.Lease:
		c, ok := cur.(*coordinationv1.Lease)
		return !ok || ptrString(o.Spec.HolderIdentity) != ptrString(c.Spec.HolderIdentity)
	case *corev1.Node:
		c, ok := cur.(*corev1.Node)
		return !ok || !reflect.DeepEqual(o.Labels, c.Labels) || !reflect.DeepEqual(o.Status.Addresses, c.Status.Addresses)
	}
	return true
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// sync routes remote CIDRs to the current Lease holder.
func (a *router) sync(ctx context.Context) {
	var node corev1.Node
	if err := a.client.Get(ctx, client.ObjectKey{Name: a.opts.NodeName}, &node); err != nil {
		a.log.Error(err, "Cannot read own Node")
		return
	}
	if gw := a.sel.Matches(labels.Set(node.Labels)); gw != a.gatewayNode {
		a.gatewayNode = gw
		if gw {
			a.log.Info("This is a gateway node: the gateway process routes it")
		}
		a.applied = nil
	}
	if a.gatewayNode {
		return
	}
	gw, ok := a.activeGateway(ctx)
	if !ok {
		return // between holders: keep the current routes
	}
	var eps mcnetv1.EndpointList
	if err := a.client.List(ctx, &eps, client.InNamespace(a.opts.Namespace)); err != nil {
		a.log.Error(err, "Cannot list Endpoints")
		return
	}
	table, terr := membership.Load(ctx, a.client, a.local.Fleet)
	if msg := fmt.Sprint(terr); msg != a.tableErr {
		a.tableErr = msg
		if terr != nil {
			a.log.Error(terr, "No remote cluster is trusted without the fleet table")
		}
	}
	state, bad, rejected := agent.BuildState(a.local, table, eps.Items, nil, gw)
	for c, err := range bad {
		a.log.V(1).Info("Remote cluster left out", "cluster", c, "reason", err.Error())
	}
	if summary := membership.Summary(rejected, 5); summary != a.rejected {
		a.rejected = summary
		if summary != "" {
			a.log.Info("Ignoring what remote clusters publish outside their allocation", "fleet", table.Name(), "ignored", summary, "count", len(rejected))
		}
	}
	now := time.Now()
	if a.applied != nil && a.applyErr == nil && reflect.DeepEqual(*a.applied, state) && now.Sub(a.appliedAt) < resync {
		return
	}
	err := a.dp.Apply(logr.NewContext(ctx, a.log), state)
	if err != nil {
		a.log.Error(err, "Dataplane apply failed")
	} else if a.applied == nil || !reflect.DeepEqual(*a.applied, state) {
		a.log.Info("Routing remote clusters to the active gateway", "gateway", gw, "remotes", len(state.Remotes))
	}
	a.applied, a.appliedAt, a.applyErr = &state, now, err
}

// activeGateway is the cluster-network address of the gateway Lease's holder.
func (a *router) activeGateway(ctx context.Context) (netip.Addr, bool) {
	var lease coordinationv1.Lease
	if err := a.client.Get(ctx, client.ObjectKey{Namespace: a.opts.Namespace, Name: agent.LeaseName}, &lease); err != nil {
		return netip.Addr{}, false
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return netip.Addr{}, false
	}
	var n corev1.Node
	if err := a.client.Get(ctx, client.ObjectKey{Name: *lease.Spec.HolderIdentity}, &n); err != nil {
		return netip.Addr{}, false
	}
	return agent.InternalIP(&n)
}

func (a *router) shutdown(ctx context.Context) error {
	if !a.gatewayNode && agent.Uninstalling(ctx, a.kube, a.opts.Namespace, DaemonSetName) {
		a.log.Info("Route agent DaemonSet removed: cleaning up the node's kernel state")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return a.dp.Cleanup(sctx)
	}
	a.log.Info("Route agent stopped; kernel state kept for the next start")
	return nil
}
