package election

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodeGoingAway: a SIGTERM is a restart (the Lease kept for the next process)
// unless the Node says it is going away, in which case the Lease is handed over at once.
func TestNodeGoingAway(t *testing.T) {
	now := metav1.Now()
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue}
	for _, tc := range []struct {
		name  string
		node  corev1.Node
		going bool
	}{
		{"ready node: a restart", corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{ready}}}, false},
		{"not ready for another reason: a restart", corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Message: "PLEG is not healthy"}}}}, false},
		{"an unrelated taint: a restart", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}}}}, false},
		{"deleted", corev1.Node{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &now}}, true},
		{"cordoned for a drain", corev1.Node{Spec: corev1.NodeSpec{Unschedulable: true}}, true},
		{"shut down, says the cloud provider", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node.cloudprovider.kubernetes.io/shutdown", Effect: corev1.TaintEffectNoSchedule}}}}, true},
		{"out of service", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node.kubernetes.io/out-of-service", Effect: corev1.TaintEffectNoExecute}}}}, true},
		{"removed by the autoscaler", corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "ToBeDeletedByClusterAutoscaler", Effect: corev1.TaintEffectNoSchedule}}}}, true},
		{"graceful node shutdown", corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionFalse, Reason: "KubeletNotReady", Message: "node is shutting down"}}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if why := nodeGoingAway(&tc.node); (why != "") != tc.going {
				t.Errorf("going away %q, want %v", why, tc.going)
			}
		})
	}
}
