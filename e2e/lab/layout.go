package lab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/mcnet-io/mcnet/e2e/lab/network"
)

// buildNetwork lays out the clusters and nodes on the address plan and builds their
// network: per cluster a control-plane namespace with the LAN bridge and one namespace
// per node; the WAN; NAT routers.
func (l *Lab) buildNetwork(ctx context.Context) error {
	for i, co := range l.opts.Clusters {
		c := &Cluster{
			Name: co.Name, Index: i, lab: l, BehindNAT: co.BehindNAT, ProxyMode: co.ProxyMode,
			PodCIDR:         netip.MustParsePrefix(co.PodCIDR).Masked(),
			ServiceCIDR:     netip.MustParsePrefix(co.ServiceCIDR).Masked(),
			ServiceCIDRv6:   parseOptionalPrefix(co.ServiceCIDRv6),
			Netns:           l.netnsName(co.Name + "-cp"),
			APIServer:       netip.AddrPortFrom(network.ControlPlaneIP(i), 6443),
			PublicAPIServer: netip.AddrPortFrom(network.UplinkIP(i), 6443),
			dir:             filepath.Join(l.Dir, co.Name),
		}
		slices, err := network.PodSlices(c.PodCIDR, co.Nodes)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		for j := range co.Nodes {
			n := &Node{Cluster: c, index: j, IP: network.NodeIP(i, j), PodCIDR: slices[j], Gateway: j < co.Gateways}
			if n.Gateway {
				n.Name = fmt.Sprintf("%s-gw%d", c.Name, j+1)
				n.PublicIP = network.PublicIP(i, j)
				n.WANIP = n.PublicIP
				if co.BehindNAT {
					n.WANIP = network.NATGatewayIP(i, j)
				}
			} else {
				n.Name = fmt.Sprintf("%s-worker%d", c.Name, j-co.Gateways+1)
			}
			n.Netns = l.netnsName(n.Name)
			if err := os.MkdirAll(n.Dir(), 0o755); err != nil {
				return err
			}
			c.Nodes = append(c.Nodes, n)
		}
		if co.BehindNAT {
			c.NATNetns = l.netnsName(c.Name + "-nat")
		}
		l.clusters = append(l.clusters, c)
	}

	t := network.Topology{WAN: l.WANNetns}
	for _, c := range l.clusters {
		t.Clusters = append(t.Clusters, c.topology())
	}
	names := t.Netnses()
	// Recorded before they exist, so Stop removes whatever part of them was created.
	l.mu.Lock()
	l.netnses = append(l.netnses, names...)
	l.topology = t
	l.mu.Unlock()
	if err := network.AddNetns(ctx, names...); err != nil {
		return err
	}
	return network.Build(ctx, t)
}

// topology is the cluster's part of the lab's network.
func (c *Cluster) topology() network.Cluster {
	t := network.Cluster{Index: c.Index, Netns: c.Netns, NATNetns: c.NATNetns, PodCIDR: c.PodCIDR}
	for _, n := range c.Nodes {
		t.Nodes = append(t.Nodes, n.topology())
	}
	return t
}

// topology is the node's part of the lab's network.
func (n *Node) topology() network.Node {
	return network.Node{
		Name: n.Name, Netns: n.Netns, Index: n.index, IP: n.IP, PodCIDR: n.PodCIDR,
		Gateway: n.Gateway, WANIP: n.WANIP, PublicIP: n.PublicIP,
	}
}

// parseOptionalPrefix is the masked prefix s, or the zero Prefix for "".
func parseOptionalPrefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s).Masked()
}
