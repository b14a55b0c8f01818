package lab

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SetDown powers the node off (down) or on. Off: its LAN and WAN cables are cut (the
// peer ends of its veths go down, so the node keeps its addresses and routes, as a
// machine that loses power keeps its configuration), the components the kubelet-lite
// runs on it are killed with SIGKILL and stay down, and its Node object reports
// NotReady. Pod objects stay, as they do until a node lifecycle controller evicts them.
// On: cables back, Node Ready, components restarted.
func (n *Node) SetDown(ctx context.Context, down bool) error {
	c := n.Cluster
	c.lab.mu.Lock()
	n.down = down
	c.lab.mu.Unlock()
	var errs []error
	errs = append(errs, n.setCables(ctx, !down, true))
	if down {
		for _, p := range c.kubelet.onNode(n) {
			p.signalAll(syscall.SIGKILL)
		}
	}
	if c.kubelet != nil {
		c.kubelet.broadcastNodeChange()
	}
	errs = append(errs, n.setNodeReady(ctx, !down))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node %s down=%v: %w", n.Name, down, err)
	}
	return nil
}

// SetWAN cuts (up=false) or restores a gateway's WAN cable only: the node and its
// components keep running and talking to their API server, but tunnels through this
// gateway stop passing traffic.
func (n *Node) SetWAN(ctx context.Context, up bool) error {
	if !n.Gateway {
		return fmt.Errorf("node %s has no WAN link", n.Name)
	}
	return n.setCables(ctx, up, false)
}

// setCables sets the far ends of the node's links: its LAN port on the control-plane
// bridge (if lan) and its WAN port on the WAN bridge or NAT router.
func (n *Node) setCables(ctx context.Context, up, lan bool) error {
	c := n.Cluster
	state := "down"
	if up {
		state = "up"
	}
	var errs []error
	if lan {
		errs = append(errs, ipBatch(ctx, c.Netns, []string{fmt.Sprintf("link set n%d %s", n.index, state)}))
	}
	if n.Gateway {
		if c.NATNetns != "" {
			errs = append(errs, ipBatch(ctx, c.NATNetns, []string{fmt.Sprintf("link set g%d %s", n.gwIndex, state)}))
		} else {
			errs = append(errs, ipBatch(ctx, c.lab.WANNetns, []string{fmt.Sprintf("link set c%dg%d %s", c.Index, n.gwIndex, state)}))
		}
	}
	return errors.Join(errs...)
}

func (n *Node) setNodeReady(ctx context.Context, ready bool) error {
	nodes := n.Cluster.Client.CoreV1().Nodes()
	obj, err := nodes.Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	obj.Status = n.status(ready)
	_, err = nodes.UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	return err
}

func (k *kubelet) onNode(n *Node) []*labPod {
	if k == nil {
		return nil
	}
	var out []*labPod
	for _, p := range k.all() {
		if p.plan.node == n {
			out = append(out, p)
		}
	}
	return out
}

// signalAll delivers sig to every running container of the pod.
func (p *labPod) signalAll(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, st := range p.containers {
		if st.proc != nil {
			select {
			case st.kill <- sig:
			default:
			}
		}
	}
}
