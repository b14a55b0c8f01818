package lab

import (
	"context"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// updateWorkloadStatus writes the counts the DaemonSet and Deployment controllers
// would, so `kubectl get ds,deploy` and status readers see how many pods run and are
// ready.
func (k *kubelet) updateWorkloadStatus(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type counts struct{ scheduled, ready int32 }
	by := map[string]*counts{}
	for _, p := range k.all() {
		key := p.plan.owner.Kind + "/" + p.plan.workload
		if by[key] == nil {
			by[key] = &counts{}
		}
		by[key].scheduled++
		if p.describe().Ready {
			by[key].ready++
		}
	}
	get := func(kind, name string) counts {
		if c := by[kind+"/"+name]; c != nil {
			return *c
		}
		return counts{}
	}
	dss, _ := k.ds.DaemonSets(WorkloadNamespace).List(labels.Everything())
	for _, ds := range dss {
		n := get("DaemonSet", ds.Name)
		st := appsv1.DaemonSetStatus{
			ObservedGeneration:     ds.Generation,
			DesiredNumberScheduled: n.scheduled, CurrentNumberScheduled: n.scheduled, UpdatedNumberScheduled: n.scheduled,
			NumberReady: n.ready, NumberAvailable: n.ready, NumberUnavailable: n.scheduled - n.ready,
		}
		if apiequality.Semantic.DeepEqual(ds.Status, st) {
			continue
		}
		obj := ds.DeepCopy()
		obj.Status = st
		_, _ = k.c.Client.AppsV1().DaemonSets(WorkloadNamespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	}
	ds, _ := k.deploy.Deployments(WorkloadNamespace).List(labels.Everything())
	for _, d := range ds {
		n := get("Deployment", d.Name)
		avail := corev1.ConditionFalse
		if n.ready > 0 && (d.Spec.Replicas == nil || n.ready >= *d.Spec.Replicas) {
			avail = corev1.ConditionTrue
		}
		// Progressing with reason NewReplicaSetAvailable is how the deployment controller
		// says a rollout finished; kstatus (so Flux's health checks) waits for it.
		progress := "ReplicaSetUpdated"
		if avail == corev1.ConditionTrue {
			progress = "NewReplicaSetAvailable"
		}
		st := appsv1.DeploymentStatus{
			ObservedGeneration: d.Generation,
			Replicas:           n.scheduled, UpdatedReplicas: n.scheduled, ReadyReplicas: n.ready,
			AvailableReplicas: n.ready, UnavailableReplicas: n.scheduled - n.ready,
			Conditions: []appsv1.DeploymentCondition{
				{Type: appsv1.DeploymentAvailable, Status: avail, Reason: "Lab"},
				{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue, Reason: progress},
			},
		}
		// Keep the times of unchanged conditions so an unchanged status is not rewritten.
		now := metav1.Now()
		for i := range st.Conditions {
			c := &st.Conditions[i]
			c.LastTransitionTime, c.LastUpdateTime = now, now
			for _, old := range d.Status.Conditions {
				if old.Type == c.Type && old.Status == c.Status && old.Reason == c.Reason {
					c.LastTransitionTime, c.LastUpdateTime = old.LastTransitionTime, old.LastUpdateTime
				}
			}
		}
		if apiequality.Semantic.DeepEqual(d.Status, st) {
			continue
		}
		obj := d.DeepCopy()
		obj.Status = st
		_, _ = k.c.Client.AppsV1().Deployments(WorkloadNamespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	}
}
