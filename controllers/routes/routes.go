// Package routes is the mcnet route agent's reconciler: on every node that is not a
// gateway node it routes the remote clusters' networks to the cluster's active gateway
// (the holder of the gateway Lease) and follows it when it changes. On gateway nodes
// it does nothing: the gateway process there owns the node's mcnet kernel state, as
// the active gateway or, when standing by, as a normal node.
//
// There is one object to reconcile, this node's routes, so the agent runs its own
// single-key loop: an event on any watched object, or the RequeueAfter the last
// Reconcile asked for, runs Reconcile again. Reconciles are level-triggered: each one
// reads the whole view from the cache.
package routes

import (
	"context"
	"errors"
	"fmt"
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
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/healthz"
)

// DaemonSetName is the route agent's DaemonSet, checked on shutdown to tell an
// uninstall from a restart.
const DaemonSetName = "mcnet-route-agent"

// Options configure a route agent: what it shares with the gateway, and where it
// answers the kubelet's probes. The gateway nodes, where it idles, are the
// AgentConfig's gateway.nodeSelector.
type Options struct {
	agent.Common
	// ProbeAddress serves /healthz and /readyz ("0" disables). Ready means the last
	// Reconcile succeeded: the node routes as the view says (on a gateway node, it
	// read its Node and leaves the node to the gateway). A new version that cannot
	// route never becomes ready, and the DaemonSet's rolling update stops at it.
	ProbeAddress string
}

// AddFlags registers the agent's flags.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.Common.AddFlags(fs)
	fs.StringVar(&o.ProbeAddress, "health-probe-bind-address", ":9455", "address of the /healthz and /readyz endpoints (0 disables them)")
}

// dataplaneAPI is what the agent needs of *dataplane.Dataplane.
type dataplaneAPI interface {
	Apply(ctx context.Context, s dataplane.State) error
	Cleanup(ctx context.Context) error
}

// Run runs the agent until ctx ends; on an uninstall it removes its kernel state.
func Run(ctx context.Context, log logr.Logger, o Options) error {
	local, cfg, dp, err := o.Start(ctx, log)
	if err != nil {
		return err
	}
	defer dp.Close()
	r, err := newReconciler(log, o, local, cfg, dp)
	if err != nil {
		return err
	}
	stopProbes, err := healthz.Serve(o.ProbeAddress, healthz.Handler(r.ready.Check))
	if err != nil {
		return fmt.Errorf("serve health probes (--health-probe-bind-address): %w", err)
	}
	defer stopProbes()
	// Benchmarks and diagnose ask this agent for measurements through NetworkTests.
	if err := o.ServeNetworkTests(ctx, log, cfg, mcnetv1.AgentRouteAgent); err != nil {
		return err
	}
	return r.run(ctx)
}

func newReconciler(log logr.Logger, o Options, local agent.Local, cfg *rest.Config, dp dataplaneAPI) (*Reconciler, error) {
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
	r := &Reconciler{
		opts: o, local: local, sel: labels.SelectorFromSet(o.Config.Gateway.NodeSelector),
		log: log, cache: c, client: cl, kube: kube, dp: dp, kick: make(chan struct{}, 1),
	}
	r.ready.Set(errors.New("starting: no Reconcile has finished yet"))
	return r, nil
}

func (r *Reconciler) trigger() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// run watches Endpoints, the fleet table, the gateway Lease and Nodes, and reconciles
// on every relevant change and whenever the last Reconcile asked to be called again.
func (r *Reconciler) run(ctx context.Context) error {
	cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	go func() { _ = r.cache.Start(cctx) }()
	for _, obj := range []client.Object{&mcnetv1.Endpoint{}, &mcnetv1.Fleet{}, &coordinationv1.Lease{}, &corev1.Node{}} {
		inf, err := r.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer: %w", err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { r.trigger() },
			UpdateFunc: func(old, cur any) {
				if relevantUpdate(old, cur) {
					r.trigger()
				}
			},
			DeleteFunc: func(any) { r.trigger() },
		}); err != nil {
			return err
		}
	}
	if !r.cache.WaitForCacheSync(ctx) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("cache did not sync")
	}
	r.log.Info("Route agent started", "node", r.opts.NodeName, "cluster", r.local.ClusterID)
	req := reconcile.Request{NamespacedName: client.ObjectKey{Name: r.opts.NodeName}}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return r.shutdown(ctx)
		case <-r.kick:
		case <-timer.C:
		}
		res, err := r.Reconcile(logr.NewContext(ctx, r.log), req)
		if err != nil {
			r.log.Error(err, "Reconcile failed")
		}
		r.ready.Set(err)
		// Errors are retried at the resync tick: what failed is a cache read or
		// the kernel, and either is repaired by the next event or a later try.
		after := res.RequeueAfter
		if after <= 0 || after > tick {
			after = tick
		}
		timer.Reset(after)
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

func (r *Reconciler) shutdown(ctx context.Context) error {
	if !r.gatewayNode && agent.Uninstalling(ctx, r.kube, r.opts.Namespace, DaemonSetName) {
		r.log.Info("Route agent DaemonSet removed: cleaning up the node's kernel state")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return r.dp.Cleanup(sctx)
	}
	r.log.Info("Route agent stopped; kernel state kept for the next start")
	return nil
}
