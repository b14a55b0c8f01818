package lab

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTroubleLines: nodes whose Ready is False or Unknown and pods not ready, without
// a Ready condition, or with a container waiting or restarted are trouble; ready ones
// are not.
func TestTroubleLines(t *testing.T) {
	node := func(ready corev1.ConditionStatus) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "hub-w1"},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}}}
	}
	for ready, want := range map[corev1.ConditionStatus]bool{corev1.ConditionTrue: false, corev1.ConditionFalse: true, corev1.ConditionUnknown: true} {
		if line, got := nodeLine(node(ready)); got != want {
			t.Errorf("%q: trouble %v, want %v", line, got, want)
		}
	}
	pod := func(ready corev1.ConditionStatus, cs ...corev1.ContainerStatus) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "mcnet-system", Name: "mcnet-dns-1"}, Status: corev1.PodStatus{ContainerStatuses: cs}}
		if ready != "" {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		}
		return p
	}
	restarted := corev1.ContainerStatus{Name: "dns", RestartCount: 2}
	waiting := corev1.ContainerStatus{Name: "controller", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off"}}}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want bool
		line string
	}{
		{pod(corev1.ConditionTrue), false, "pod mcnet-system/mcnet-dns-1 node= ip= ready=True "},
		{pod(corev1.ConditionTrue, restarted), true, "pod mcnet-system/mcnet-dns-1 node= ip= ready=True dns: 2 restarts"},
		{pod(corev1.ConditionFalse, waiting), true, "pod mcnet-system/mcnet-dns-1 node= ip= ready=False controller: CrashLoopBackOff back-off"},
		{pod(""), true, "pod mcnet-system/mcnet-dns-1 node= ip= ready= "},
	} {
		line, got := podLine(tc.pod)
		if line != tc.line || got != tc.want {
			t.Errorf("podLine = %q, %v; want %q, %v", line, got, tc.line, tc.want)
		}
	}
}
