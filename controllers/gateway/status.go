package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/membership"
	"github.com/mcnet-io/mcnet/internal/version"
)

// statusPatch is what the steps of a Reconcile found for the Gateway status; the
// deferred patchStatus writes it once they are done.
type statusPatch struct {
	// write says something changed or the heartbeat is due; nothing is written
	// without it (a standby that does not know the holder yet, an error early on).
	write    bool
	ha       mcnetv1.HAStatus
	endpoint *mcnetv1.EndpointSpec
	conns    []mcnetv1.Connection
	// after are Events to record once the Gateway exists.
	after []Event
}

// patchStatus writes what the Reconcile found, then records the Events that need the
// Gateway object.
func (g *Gateway) patchStatus(ctx context.Context, st *statusPatch) {
	if st.write {
		g.writeStatus(ctx, st.ha, st.endpoint, st.conns)
	}
	for _, ev := range st.after {
		g.event(ctx, ev.Type, ev.Reason, ev.Message)
	}
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
		ObservedGeneration: gw.Generation,
		RenewTime:          &metav1.MicroTime{Time: now},
		ExpireTime:         &metav1.MicroTime{Time: now.Add(mcnetv1.GatewayExpiry)},
	}
	if ha == mcnetv1.HAActive {
		gw.Status.Remap = g.remap
	}
	if c := g.standbyCond; c != nil && ha == mcnetv1.HAPassive {
		gw.Status.Conditions = append(gw.Status.Conditions, keepTransition(base.Status.Conditions, *c, now))
	}
	if c := g.allocCond; c != nil && ha == mcnetv1.HAActive {
		gw.Status.Conditions = append(gw.Status.Conditions, keepTransition(base.Status.Conditions, *c, now))
	}
	// Ready last, from everything above.
	gw.Status.Conditions = append(gw.Status.Conditions, readyCondition(base.Status.Conditions, ha, conns, g.applyErr, now))
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
func readyCondition(old []metav1.Condition, ha mcnetv1.HAStatus, conns []mcnetv1.Connection, applyErr error, now time.Time) metav1.Condition {
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
	return keepTransition(old, c, now)
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
