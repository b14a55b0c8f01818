package routes

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/healthz"
	"github.com/mcnet-io/mcnet/internal/membership"
)

const (
	// tick is how often the view is reconciled without an event.
	tick = 10 * time.Second
	// resync re-applies an unchanged state, repairing what someone else changed.
	resync = 30 * time.Second
)

// Reconciler keeps this node's routes to the remote clusters pointed at the active
// gateway. Its one request is this node.
type Reconciler struct {
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
	// ready is why /readyz fails: nil once the last Reconcile succeeded.
	ready healthz.Readiness
}

// Reconcile routes the remote clusters' networks to the current Lease holder: own
// Node (a gateway node is left to the gateway) → the active gateway → the view
// (Endpoints, fleet table) → the state → apply.
func (r *Reconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	var node corev1.Node
	if err := r.client.Get(ctx, client.ObjectKey{Name: r.opts.NodeName}, &node); err != nil {
		return reconcile.Result{}, fmt.Errorf("read own Node: %w", err)
	}
	if r.noteGatewayNode(&node) {
		return reconcile.Result{}, nil
	}
	gw, ok := r.activeGateway(ctx)
	if !ok {
		return reconcile.Result{}, nil // between holders: keep the current routes
	}
	var eps mcnetv1.EndpointList
	if err := r.client.List(ctx, &eps, client.InNamespace(r.opts.Namespace)); err != nil {
		return reconcile.Result{}, fmt.Errorf("list Endpoints: %w", err)
	}
	state := r.buildState(ctx, eps.Items, gw)
	return reconcile.Result{RequeueAfter: tick}, r.apply(ctx, state, gw)
}

// noteGatewayNode reports whether this is a gateway node, whose routes the gateway
// process owns, and forgets what was applied when that changes.
func (r *Reconciler) noteGatewayNode(node *corev1.Node) bool {
	if gw := r.sel.Matches(labels.Set(node.Labels)); gw != r.gatewayNode {
		r.gatewayNode = gw
		if gw {
			r.log.Info("This is a gateway node: the gateway process routes it")
		}
		r.applied = nil
	}
	return r.gatewayNode
}

// activeGateway is the cluster-network address of the gateway Lease's holder.
func (r *Reconciler) activeGateway(ctx context.Context) (netip.Addr, bool) {
	var lease coordinationv1.Lease
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: r.opts.Namespace, Name: agent.LeaseName}, &lease); err != nil {
		return netip.Addr{}, false
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return netip.Addr{}, false
	}
	var n corev1.Node
	if err := r.client.Get(ctx, client.ObjectKey{Name: *lease.Spec.HolderIdentity}, &n); err != nil {
		return netip.Addr{}, false
	}
	return agent.InternalIP(&n)
}

// buildState is the desired state: every trusted remote routed to gw. What the fleet
// table cannot vouch for is left out, and said once.
func (r *Reconciler) buildState(ctx context.Context, eps []mcnetv1.Endpoint, gw netip.Addr) dataplane.State {
	table, terr := membership.Load(ctx, r.client, r.local.Fleet)
	if msg := fmt.Sprint(terr); msg != r.tableErr {
		r.tableErr = msg
		if terr != nil {
			r.log.Error(terr, "No remote cluster is trusted without the fleet table")
		}
	}
	state, bad, rejected := agent.BuildState(r.local, table, eps, nil, gw)
	for c, err := range bad {
		r.log.V(1).Info("Remote cluster left out", "cluster", c, "reason", err.Error())
	}
	if summary := membership.Summary(rejected, 5); summary != r.rejected {
		r.rejected = summary
		if summary != "" {
			r.log.Info("Ignoring what remote clusters publish outside their allocation", "fleet", table.Name(), "ignored", summary, "count", len(rejected))
		}
	}
	return state
}

// apply drives the dataplane when the state changed, and every resync to repair drift.
func (r *Reconciler) apply(ctx context.Context, state dataplane.State, gw netip.Addr) error {
	now := time.Now()
	if r.applied != nil && r.applyErr == nil && reflect.DeepEqual(*r.applied, state) && now.Sub(r.appliedAt) < resync {
		return nil
	}
	err := r.dp.Apply(ctx, state)
	if err == nil && (r.applied == nil || !reflect.DeepEqual(*r.applied, state)) {
		r.log.Info("Routing remote clusters to the active gateway", "gateway", gw, "remotes", len(state.Remotes))
	}
	r.applied, r.appliedAt, r.applyErr = &state, now, err
	if err != nil {
		return fmt.Errorf("dataplane apply: %w", err)
	}
	return nil
}
