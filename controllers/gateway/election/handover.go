package election

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/mcnet-io/mcnet/internal/agent"
)

// yieldAfterCrash waits out the Lease when it still names this node: the previous
// process died without handing it over (a crash, a SIGKILL), so a standby, if there
// is one, should take over rather than a process that may crash again. Without a
// standby this node takes the Lease back one Lease duration later. A Lease the
// previous process kept for its restart (see HandOver) is taken back at once.
func (e *Elector) yieldAfterCrash(ctx context.Context) {
	lease, err := e.kube.CoordinationV1().Leases(e.cfg.Namespace).Get(ctx, agent.LeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != e.cfg.Identity {
		return
	}
	if keptForRestart(lease, e.cfg) {
		e.log.Info("Taking the gateway Lease back after a restart")
		return
	}
	e.log.Info("The gateway Lease still names this node after an unclean exit: giving standbys a chance first")
	select {
	case <-ctx.Done():
	case <-time.After(e.cfg.LeaseDuration + e.cfg.RetryPeriod):
	}
}

// HandOver runs once Run has returned, if this node holds the Lease. On a restart it
// renews the Lease one last time for RestartGrace: standbys wait, and the restarted
// process (same identity, the node name) takes it back at once and returns it to
// LeaseDuration. Otherwise it releases the Lease, as client-go does, so a standby
// takes over at once. A crash does neither: the short Lease runs out.
func (e *Elector) HandOver(ctx context.Context, restart bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	leases := e.kube.CoordinationV1().Leases(e.cfg.Namespace)
	lease, err := leases.Get(ctx, agent.LeaseName, metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != e.cfg.Identity {
		return
	}
	now := metav1.NewMicroTime(e.now())
	lease.Spec.RenewTime = &now
	if restart && e.cfg.RestartGrace > e.cfg.LeaseDuration {
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(e.cfg.RestartGrace / time.Second))
	} else {
		restart = false
		lease.Spec.HolderIdentity = ptr.To("")
		lease.Spec.AcquireTime = &now
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(1))
	}
	if _, err := leases.Update(ctx, lease, metav1.UpdateOptions{}); err != nil {
		e.log.Error(err, "Cannot hand the gateway Lease over", "restart", restart)
		return
	}
	if restart {
		e.log.Info("Gateway Lease kept for the restart", "grace", e.cfg.RestartGrace)
	} else {
		e.log.Info("Gateway Lease released")
	}
}

// keptForRestart reports whether HandOver kept the Lease for a restart and nobody
// renewed it since: its duration is the restart grace, which the election never
// writes.
func keptForRestart(lease *coordinationv1.Lease, c Config) bool {
	d := lease.Spec.LeaseDurationSeconds
	return c.RestartGrace > c.LeaseDuration && d != nil && time.Duration(*d)*time.Second == c.RestartGrace.Truncate(time.Second)
}

// Restarting reports whether this stop is a restart, after which the same node runs
// the next process: the node still matches the node selector of the DaemonSet
// daemonSet in namespace (a node that stops being a gateway node hands the Lease over
// at once) and is not going away. Unreadable objects count as a restart.
//
// A SIGTERM looks the same in a rollout restart and in a node shutdown or drain; what
// tells them apart is the Node, read from the API server at the moment of the signal
// (see nodeGoingAway). A node going away hands over at once, since no next process
// comes to take the Lease back, and the restart grace would be a blackout.
func Restarting(ctx context.Context, log logr.Logger, kube kubernetes.Interface, namespace, daemonSet, nodeName string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	ds, err := kube.AppsV1().DaemonSets(namespace).Get(ctx, daemonSet, metav1.GetOptions{})
	if err != nil {
		return true
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return true
	}
	for k, v := range ds.Spec.Template.Spec.NodeSelector {
		if node.Labels[k] != v {
			return false
		}
	}
	if why := nodeGoingAway(node); why != "" {
		log.Info("The node is going away: handing the gateway Lease over at once", "reason", why)
		return false
	}
	return true
}

// shutdownTaints are the taints put on a node that is shutting down or leaving: the
// cloud provider's for a node it found shut down, the one an operator sets for an
// out-of-service node, and the cluster autoscaler's before it deletes a node.
var shutdownTaints = []string{
	"node.cloudprovider.kubernetes.io/shutdown",
	"node.kubernetes.io/out-of-service",
	"ToBeDeletedByClusterAutoscaler",
}

// nodeGoingAway says why node is going away, "" when it is not: it is being deleted,
// it is cordoned (spec.unschedulable, as kubectl drain leaves it before a maintenance
// shutdown), it carries a shutdown taint, or its kubelet reports it shutting down
// (graceful node shutdown sets Ready=False with "node is shutting down").
func nodeGoingAway(node *corev1.Node) string {
	switch {
	case node.DeletionTimestamp != nil:
		return "deleted"
	case node.Spec.Unschedulable:
		return "cordoned"
	}
	for _, t := range node.Spec.Taints {
		if slices.Contains(shutdownTaints, t.Key) {
			return "taint " + t.Key
		}
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue && strings.Contains(c.Message, "shutting down") {
			return "kubelet: " + c.Message
		}
	}
	return ""
}
