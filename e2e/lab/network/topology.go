package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/sync/errgroup"
)

// Topology describes the lab's network: one WAN and, per cluster, a LAN bridged in
// its control-plane namespace with its nodes on it. Build turns it into namespaces,
// links, addresses, routes and NAT rules; the names of the links it makes are part of
// the description (SetCables finds a node's ports by them).
type Topology struct {
	// WAN is the namespace of the WAN bridge every cluster's uplink and gateways join.
	WAN      string
	Clusters []Cluster
}

// Cluster is one cluster's part of the topology.
type Cluster struct {
	// Index is the cluster's I in the address plan.
	Index int
	// Netns is the control-plane namespace: the LAN bridge and the uplink to the WAN.
	Netns string
	// NATNetns is the 1:1 NAT router the gateways sit behind, "" if they are on the WAN.
	NATNetns string
	// PodCIDR is masqueraded when it leaves for the WAN.
	PodCIDR netip.Prefix
	Nodes   []Node
}

// Node is one node's part of the topology.
type Node struct {
	Name  string
	Netns string
	// Index is the node's J in the address plan; it also names the node's ports on the
	// LAN bridge (nJ) and the WAN (cIgJ, or gJ on the NAT router).
	Index int
	// IP is the node's LAN address; PodCIDR is routed to it by every other node and the
	// control plane.
	IP      netip.Addr
	PodCIDR netip.Prefix
	// Gateway nodes get a second interface, wan0, with WANIP; PublicIP is where the WAN
	// reaches them (the same address unless the cluster is behind NAT).
	Gateway         bool
	WANIP, PublicIP netip.Addr
}

// Gateways are the cluster's gateway nodes.
func (c Cluster) Gateways() []Node {
	var out []Node
	for _, n := range c.Nodes {
		if n.Gateway {
			out = append(out, n)
		}
	}
	return out
}

// Netnses lists every namespace of the topology, the WAN first.
func (t Topology) Netnses() []string {
	names := []string{t.WAN}
	for _, c := range t.Clusters {
		names = append(names, c.Netns)
		if c.NATNetns != "" {
			names = append(names, c.NATNetns)
		}
		for _, n := range c.Nodes {
			names = append(names, n.Netns)
		}
	}
	return names
}

// Build wires namespaces that AddNetns created: every cluster's LAN (in parallel),
// then the WAN with the uplinks, gateways and NAT routers.
func Build(ctx context.Context, t Topology) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range t.Clusters {
		g.Go(func() error { return buildLAN(gctx, c) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return buildWAN(ctx, t)
}

// AddNetns creates named namespaces with loopback up and forwarding on. When it fails
// some of them may exist: the caller removes all of names with RemoveNetns.
func AddNetns(ctx context.Context, names ...string) error {
	var lines []string
	for _, n := range names {
		lines = append(lines, "netns add "+n)
	}
	if err := IPBatch(ctx, "", lines); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, n := range names {
		g.Go(func() error {
			// Routing between pods, nodes and clusters is what namespaces are for; the
			// kernel default for a new namespace is not to forward.
			return errors.Join(IPBatch(gctx, n, []string{"link set lo up"}),
				Sysctls(gctx, n, "net.ipv4.ip_forward=1"))
		})
	}
	return g.Wait()
}

// buildLAN wires the cluster's nodes to a bridge in the control-plane namespace and
// routes every node's pod slice to that node: plain routing is the lab's CNI.
func buildLAN(ctx context.Context, c Cluster) error {
	cp := []string{
		"link add lan type bridge",
		fmt.Sprintf("addr add %s/24 dev lan", ControlPlaneIP(c.Index)),
		"link set lan up",
	}
	for _, n := range c.Nodes {
		peer := lanPort(n)
		cp = append(cp,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", peer, n.Netns),
			fmt.Sprintf("link set %s master lan", peer),
			fmt.Sprintf("link set %s up", peer),
			// The control plane answers pods (they talk to the API server directly),
			// so it needs the way back to them.
			fmt.Sprintf("route add %s via %s", n.PodCIDR, n.IP))
	}
	if err := IPBatch(ctx, c.Netns, cp); err != nil {
		return fmt.Errorf("LAN of %s: %w", c.Netns, err)
	}
	// Bridged frames should not traverse this namespace's iptables (br_netfilter is
	// loaded on these hosts); best effort because the knob exists only with the module.
	_ = Sysctls(ctx, c.Netns, "net.bridge.bridge-nf-call-iptables=0")
	for _, n := range c.Nodes {
		lines := []string{
			fmt.Sprintf("addr add %s/24 dev eth0", n.IP),
			"link set eth0 up",
			// Like a cloud VPC's router: the rest of the world (the WAN, other
			// clusters' public API servers) through the control-plane namespace.
			fmt.Sprintf("route add default via %s", ControlPlaneIP(c.Index)),
		}
		for _, o := range c.Nodes {
			if o != n {
				lines = append(lines, fmt.Sprintf("route add %s via %s", o.PodCIDR, o.IP))
			}
		}
		if err := IPBatch(ctx, n.Netns, lines); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// buildWAN joins every gateway to the WAN bridge, directly or through its cluster's
// NAT router.
func buildWAN(ctx context.Context, t Topology) error {
	wan := []string{
		"link add wan type bridge",
		fmt.Sprintf("addr add %s/%d dev wan", WANIP, WANPrefix.Bits()),
		"link set wan up",
	}
	type nsLines struct {
		netns string
		lines []string
	}
	var after []nsLines
	var nat []nsLines
	var uplinks []nsLines
	for _, c := range t.Clusters {
		// Every cluster's control-plane namespace is its uplink to the WAN: the API
		// server is reachable there (a broker must be), and node traffic leaves
		// masqueraded, as from a VPC with a NAT gateway.
		up := fmt.Sprintf("c%dup", c.Index)
		wan = append(wan,
			fmt.Sprintf("link add %s type veth peer name uplink netns %s", up, c.Netns),
			fmt.Sprintf("link set %s master wan", up),
			fmt.Sprintf("link set %s up", up))
		uplinks = append(uplinks, nsLines{c.Netns, []string{
			fmt.Sprintf("addr add %s/%d dev uplink", UplinkIP(c.Index), WANPrefix.Bits()),
			"link set uplink up",
		}}, nsLines{c.Netns, []string{
			"*nat",
			fmt.Sprintf("-A POSTROUTING -o uplink -s %s -j MASQUERADE", LANPrefix(c.Index)),
			fmt.Sprintf("-A POSTROUTING -o uplink -s %s -j MASQUERADE", c.PodCIDR),
			"COMMIT",
		}})
		if c.NATNetns == "" {
			for _, n := range c.Gateways() {
				peer := wanPort(c, n)
				wan = append(wan,
					fmt.Sprintf("link add %s type veth peer name wan0 netns %s", peer, n.Netns),
					fmt.Sprintf("link set %s master wan", peer),
					fmt.Sprintf("link set %s up", peer))
				after = append(after, nsLines{n.Netns, []string{
					fmt.Sprintf("addr add %s/%d dev wan0", n.WANIP, WANPrefix.Bits()),
					"link set wan0 up",
				}})
			}
			continue
		}
		// A 1:1 NAT like a cloud's public IPs: each gateway has its own public address,
		// inbound traffic to it is forwarded, outbound traffic leaves from it.
		peer := fmt.Sprintf("c%dnat", c.Index)
		wan = append(wan,
			fmt.Sprintf("link add %s type veth peer name wan0 netns %s", peer, c.NATNetns),
			fmt.Sprintf("link set %s master wan", peer),
			fmt.Sprintf("link set %s up", peer))
		router := []string{
			"link add priv type bridge",
			fmt.Sprintf("addr add %s/24 dev priv", natRouterPrivateIP(c.Index)),
			"link set priv up",
		}
		routerAfter := []string{"link set wan0 up"}
		rules := []string{"*nat"}
		for _, n := range c.Gateways() {
			gp := natPort(n)
			router = append(router,
				fmt.Sprintf("link add %s type veth peer name wan0 netns %s", gp, n.Netns),
				fmt.Sprintf("link set %s master priv", gp),
				fmt.Sprintf("link set %s up", gp))
			routerAfter = append(routerAfter, fmt.Sprintf("addr add %s/%d dev wan0", n.PublicIP, WANPrefix.Bits()))
			after = append(after, nsLines{n.Netns, []string{
				fmt.Sprintf("addr add %s/24 dev wan0", n.WANIP),
				"link set wan0 up",
				fmt.Sprintf("route add %s via %s", WANPrefix, natRouterPrivateIP(c.Index)),
			}})
			rules = append(rules,
				fmt.Sprintf("-A PREROUTING -i wan0 -d %s/32 -j DNAT --to-destination %s", n.PublicIP, n.WANIP),
				fmt.Sprintf("-A POSTROUTING -o wan0 -s %s/32 -j SNAT --to-source %s", n.WANIP, n.PublicIP))
		}
		rules = append(rules, "COMMIT")
		nat = append(nat, nsLines{c.NATNetns, router}, nsLines{c.NATNetns, routerAfter}, nsLines{c.NATNetns, rules})
	}
	if err := IPBatch(ctx, t.WAN, wan); err != nil {
		return fmt.Errorf("WAN: %w", err)
	}
	_ = Sysctls(ctx, t.WAN, "net.bridge.bridge-nf-call-iptables=0")
	for i := 0; i < len(uplinks); i += 2 {
		if err := IPBatch(ctx, uplinks[i].netns, uplinks[i].lines); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		if err := iptablesRestore(ctx, uplinks[i+1].netns, strings.Join(uplinks[i+1].lines, "\n")+"\n"); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	for i := 0; i < len(nat); i += 3 {
		if err := IPBatch(ctx, nat[i].netns, nat[i].lines); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		if err := IPBatch(ctx, nat[i+1].netns, nat[i+1].lines); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		if err := iptablesRestore(ctx, nat[i+2].netns, strings.Join(nat[i+2].lines, "\n")+"\n"); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		_ = Sysctls(ctx, nat[i].netns, "net.bridge.bridge-nf-call-iptables=0")
	}
	for _, a := range after {
		if err := IPBatch(ctx, a.netns, a.lines); err != nil {
			return fmt.Errorf("gateway WAN: %w", err)
		}
	}
	// Pods on a gateway node reach the WAN (another cluster's broker) straight out of
	// wan0; like pods on any node with a public interface, they leave masqueraded, or
	// the answers would be addressed to a pod CIDR nobody on the WAN routes.
	// Cross-cluster pod traffic is not affected: it leaves through mcnet's tunnels.
	for _, c := range t.Clusters {
		for _, n := range c.Gateways() {
			rules := fmt.Sprintf("*nat\n-A POSTROUTING -o wan0 -s %s -j MASQUERADE\nCOMMIT\n", c.PodCIDR)
			if err := iptablesRestore(ctx, n.Netns, rules); err != nil {
				return fmt.Errorf("gateway %s: %w", n.Name, err)
			}
		}
	}
	return nil
}

func iptablesRestore(ctx context.Context, netns, rules string) error {
	return RunStdin(ctx, rules, "ip", "netns", "exec", netns, "iptables-restore", "--noflush")
}

// lanPort is the node's port on its cluster's LAN bridge.
func lanPort(n Node) string { return fmt.Sprintf("n%d", n.Index) }

// wanPort is a gateway's port on the WAN bridge, when its cluster is not behind NAT.
func wanPort(c Cluster, n Node) string { return fmt.Sprintf("c%dg%d", c.Index, n.Index) }

// natPort is a gateway's port on its NAT router's private bridge.
func natPort(n Node) string { return fmt.Sprintf("g%d", n.Index) }

// SetCables sets the far ends of a node's links up or down, as plugging or pulling its
// cables would: its WAN port on the WAN bridge or NAT router and, if lan, its port on
// the LAN bridge. The node's own interfaces keep their addresses and routes.
func SetCables(ctx context.Context, t Topology, c Cluster, n Node, up, lan bool) error {
	state := "down"
	if up {
		state = "up"
	}
	var errs []error
	if lan {
		errs = append(errs, IPBatch(ctx, c.Netns, []string{fmt.Sprintf("link set %s %s", lanPort(n), state)}))
	}
	if n.Gateway {
		if c.NATNetns != "" {
			errs = append(errs, IPBatch(ctx, c.NATNetns, []string{fmt.Sprintf("link set %s %s", natPort(n), state)}))
		} else {
			errs = append(errs, IPBatch(ctx, t.WAN, []string{fmt.Sprintf("link set %s %s", wanPort(c, n), state)}))
		}
	}
	return errors.Join(errs...)
}
