package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WorkloadNamespace is where mcnet's rendered components run.
const WorkloadNamespace = "mcnet-system"

// WorkloadPod describes a pod of one of mcnet's Deployments or DaemonSets, as its
// kubelet reports it.
type WorkloadPod struct {
	// Name of the Pod object in WorkloadNamespace; Workload names its Deployment or
	// DaemonSet.
	Name, Workload string
	Node           *Node
	// Netns is the pod's network namespace (its node's name for hostNetwork pods, else
	// a /proc path); IP its address.
	Netns string
	IP    netip.Addr
	// PIDs of its running containers on the host, by container name (absent while a
	// container is not running).
	PIDs map[string]int
	// Restarts counts container restarts over the pod's life.
	Restarts int
	// Ready is the Pod's Ready condition.
	Ready bool
	// Err says why a container is not running, if one is not.
	Err error
	// Pod is the object as last read.
	Pod *corev1.Pod
}

// WorkloadPods lists the pods of workload ("" for all) in WorkloadNamespace.
func (c *Cluster) WorkloadPods(ctx context.Context, workload string) ([]WorkloadPod, error) {
	list, err := c.Client.CoreV1().Pods(WorkloadNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: list pods: %w", c.Name, err)
	}
	var out []WorkloadPod
	// One task list per node, not one per container.
	tasks := map[*Node]map[string]int{}
	for i := range list.Items {
		p := &list.Items[i]
		w := WorkloadPod{Name: p.Name, Workload: workloadOf(p), Node: c.Node(p.Spec.NodeName), PIDs: map[string]int{}, Pod: p}
		if workload != "" && w.Workload != workload {
			continue
		}
		w.IP, _ = netip.ParseAddr(p.Status.PodIP)
		w.Err = podProblem(p)
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady {
				w.Ready = cond.Status == corev1.ConditionTrue
			}
		}
		for _, st := range p.Status.ContainerStatuses {
			w.Restarts += int(st.RestartCount)
			if st.State.Running == nil || w.Node == nil || w.Node.runtime == nil {
				continue
			}
			if _, ok := tasks[w.Node]; !ok {
				tasks[w.Node], _ = w.Node.runtime.Tasks(ctx)
			}
			if pid, ok := tasks[w.Node][strings.TrimPrefix(st.ContainerID, "containerd://")]; ok {
				w.PIDs[st.Name] = pid
				if w.Netns == "" {
					w.Netns = fmt.Sprintf("/proc/%d/ns/net", pid)
				}
			}
		}
		if p.Spec.HostNetwork && w.Node != nil {
			w.Netns = w.Node.Netns
		}
		out = append(out, w)
	}
	return out, nil
}

// workloadOf names the Deployment or DaemonSet that owns a pod: a DaemonSet directly,
// a Deployment through its ReplicaSet (whose name is the Deployment's plus the
// pod-template-hash).
func workloadOf(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		switch o.Kind {
		case "DaemonSet", "StatefulSet":
			return o.Name
		case "ReplicaSet":
			if h := p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]; h != "" {
				return strings.TrimSuffix(o.Name, "-"+h)
			}
			return o.Name
		}
	}
	return ""
}

// Kill sends SIGKILL to the containers of workload's pod on node, as a crash would;
// its kubelet restarts them.
func (c *Cluster) Kill(ctx context.Context, workload, node string) error {
	return c.signal(ctx, workload, node, syscall.SIGKILL)
}

// Restart stops the containers of workload's pod on node with SIGTERM; its kubelet
// starts them again.
func (c *Cluster) Restart(ctx context.Context, workload, node string) error {
	return c.signal(ctx, workload, node, syscall.SIGTERM)
}

// Kill is Cluster.Kill for the cluster owning node.
func (l *Lab) Kill(ctx context.Context, workload, node string) error {
	c, err := l.clusterOfNode(node)
	if err != nil {
		return err
	}
	return c.Kill(ctx, workload, node)
}

// Restart is Cluster.Restart for the cluster owning node.
func (l *Lab) Restart(ctx context.Context, workload, node string) error {
	c, err := l.clusterOfNode(node)
	if err != nil {
		return err
	}
	return c.Restart(ctx, workload, node)
}

func (l *Lab) clusterOfNode(node string) (*Cluster, error) {
	for _, c := range l.clusters {
		if c.Node(node) != nil {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no node %q in lab %s", node, l.RunID)
}

// signal delivers sig to the main process of every running container of workload's
// pod on node and returns once they have exited.
func (c *Cluster) signal(ctx context.Context, workload, node string, sig syscall.Signal) error {
	pods, err := c.WorkloadPods(ctx, workload)
	if err != nil {
		return err
	}
	var pids []int
	found := false
	for _, w := range pods {
		if w.Node == nil || w.Node.Name != node {
			continue
		}
		found = true
		for _, pid := range w.PIDs {
			pids = append(pids, pid)
		}
	}
	if !found {
		return fmt.Errorf("cluster %s: no pod of %s on node %q", c.Name, workload, node)
	}
	if len(pids) == 0 {
		return fmt.Errorf("cluster %s: the pod of %s on %s has no running container", c.Name, workload, node)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signal %d: %w", pid, err)
		}
	}
	return Eventually(ctx, 30*time.Second, func(context.Context) error {
		for _, pid := range pids {
			if processAlive(pid) {
				return fmt.Errorf("process %d of %s on %s still runs", pid, workload, node)
			}
		}
		return nil
	})
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil {
		return false
	}
	st, err := procState(pid)
	return err == nil && st != 'Z'
}

// WaitWorkloads waits until every Deployment and DaemonSet in WorkloadNamespace has
// all its pods updated, available and ready. A pod whose image cannot be pulled or
// whose container the kubelet refuses (CreateContainerConfigError) ends the wait at
// once with the kubelet's reason.
func (c *Cluster) WaitWorkloads(ctx context.Context, timeout time.Duration) error {
	return Eventually(ctx, timeout, func(ctx context.Context) error {
		var errs []error
		deps, err := c.Client.AppsV1().Deployments(WorkloadNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range deps.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas < want || d.Status.ReadyReplicas < want || d.Status.Replicas != want {
				errs = append(errs, fmt.Errorf("deployment %s: %d/%d ready, %d updated", d.Name, d.Status.ReadyReplicas, want, d.Status.UpdatedReplicas))
			}
		}
		dss, err := c.Client.AppsV1().DaemonSets(WorkloadNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range dss.Items {
			s := d.Status
			if s.ObservedGeneration < d.Generation || s.NumberReady < s.DesiredNumberScheduled || s.UpdatedNumberScheduled < s.DesiredNumberScheduled {
				errs = append(errs, fmt.Errorf("daemonset %s: %d/%d ready, %d updated", d.Name, s.NumberReady, s.DesiredNumberScheduled, s.UpdatedNumberScheduled))
			}
		}
		if len(errs) > 0 {
			pods, _ := c.WorkloadPods(ctx, "")
			for _, w := range pods {
				if w.Err != nil {
					var p *permanent
					if errors.As(w.Err, &p) {
						return &permanent{fmt.Errorf("cluster %s: %w", c.Name, p.err)}
					}
					errs = append(errs, w.Err)
				}
			}
		}
		if err := errors.Join(errs...); err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		return nil
	})
}

// permanent stops Eventually early.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// Permanent wraps err so that Eventually returns it at once instead of retrying.
func Permanent(err error) error { return &permanent{err} }
