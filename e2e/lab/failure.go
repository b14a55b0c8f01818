package lab

import (
	"context"
	"errors"
	"fmt"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
)

// SetDown powers the node off (down) or on. Off: its LAN and WAN cables are cut (the
// peer ends of its veths go down, so the node keeps its addresses and routes, as a
// machine that loses power keeps its configuration) and every process of the node —
// containerd, the kubelet, every container — is killed at once. The Node turns
// NotReady when the node lifecycle controller misses its heartbeats. On: cables back,
// containerd and the kubelet start again and restart the node's pods.
func (n *Node) SetDown(ctx context.Context, down bool) error {
	c := n.Cluster
	c.lab.mu.Lock()
	n.down = down
	c.lab.mu.Unlock()
	var errs []error
	errs = append(errs, n.setCables(ctx, !down, true))
	if n.runtime != nil {
		if down {
			errs = append(errs, n.runtime.PowerOff(ctx))
		} else {
			errs = append(errs, n.runtime.PowerOn(ctx))
		}
	}
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
	c.lab.mu.Lock()
	t := c.lab.topology
	c.lab.mu.Unlock()
	return network.SetCables(ctx, t, t.Clusters[c.Index], t.Clusters[c.Index].Nodes[n.index], up, lan)
}
