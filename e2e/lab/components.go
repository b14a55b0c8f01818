package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"time"
)

// WorkloadPod describes a pod the kubelet-lite runs for a Deployment or DaemonSet.
type WorkloadPod struct {
	// Name of the Pod object in WorkloadNamespace; Workload names its Deployment or
	// DaemonSet.
	Name, Workload string
	Node           *Node
	// Netns and IP are the pod's (its node's, for hostNetwork pods).
	Netns string
	IP    netip.Addr
	// PIDs of its running containers, by container name (absent while restarting).
	PIDs map[string]int
	// Restarts counts container restarts over the pod's life.
	Restarts int
	// Ready is true when every container runs and passes its readiness probe, which is
	// what the Pod object's Ready condition is set to.
	Ready bool
	// Err says why the pod's containers are not running, if they are not.
	Err error
}

// WorkloadPods lists the pods the kubelet-lite runs for workload ("" for all).
func (c *Cluster) WorkloadPods(workload string) []WorkloadPod {
	var out []WorkloadPod
	for _, p := range c.kubelet.all() {
		if workload != "" && p.plan.workload != workload {
			continue
		}
		out = append(out, p.describe())
	}
	return out
}

func (p *labPod) describe() WorkloadPod {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := WorkloadPod{Name: p.plan.name, Workload: p.plan.workload, Node: p.plan.node, PIDs: map[string]int{}, Err: p.waiting}
	if p.pod != nil {
		w.Netns, w.IP = p.pod.Netns, p.pod.IP
	}
	w.Ready = p.waiting == nil && p.pod != nil
	for _, ctr := range p.plan.template.Spec.Containers {
		st := p.containers[ctr.Name]
		w.Restarts += int(st.restarts)
		if st.proc != nil && !st.proc.exited() {
			w.PIDs[ctr.Name] = st.proc.pid()
		} else {
			w.Ready = false
		}
		w.Ready = w.Ready && st.ready
	}
	return w
}

// Kill sends SIGKILL to the containers of workload's pod on node, as a crash would;
// the kubelet-lite restarts them (at once the first time, then with backoff).
func (c *Cluster) Kill(ctx context.Context, workload, node string) error {
	return c.signal(ctx, workload, node, syscall.SIGKILL)
}

// Restart stops the containers of workload's pod on node with SIGTERM and starts them
// again at once.
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

// signal delivers sig to every running container of the pod and returns once they
// have exited.
func (c *Cluster) signal(ctx context.Context, workload, node string, sig syscall.Signal) error {
	pods := c.kubelet.find(workload, node)
	if len(pods) == 0 {
		return fmt.Errorf("cluster %s: no pod of %s on node %q", c.Name, workload, node)
	}
	for _, p := range pods {
		p.mu.Lock()
		var procs []*proc
		for _, st := range p.containers {
			if st.proc != nil {
				procs = append(procs, st.proc)
				select {
				case st.kill <- sig:
				default:
				}
			}
		}
		p.mu.Unlock()
		if len(procs) == 0 {
			return fmt.Errorf("cluster %s: pod %s has no running container", c.Name, p.plan.name)
		}
		for _, pr := range procs {
			select {
			case <-pr.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// WaitWorkloads waits until every pod the applied Deployments and DaemonSets call for
// runs and is ready. It fails at once when a program is missing (ErrMissingBinary).
func (c *Cluster) WaitWorkloads(ctx context.Context, timeout time.Duration) error {
	return Eventually(ctx, timeout, func(context.Context) error {
		c.kubelet.kick()
		want := c.kubelet.desired()
		have := map[string]WorkloadPod{}
		for _, w := range c.WorkloadPods("") {
			have[w.Name] = w
		}
		var errs []error
		for name := range want {
			w, ok := have[name]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("pod %s not started", name))
			case w.Err != nil:
				if errors.Is(w.Err, ErrMissingBinary) {
					return &permanent{w.Err}
				}
				errs = append(errs, fmt.Errorf("pod %s: %w", name, w.Err))
			case !w.Ready:
				errs = append(errs, fmt.Errorf("pod %s on %s not ready (restarts %d)", name, w.Node.Name, w.Restarts))
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
