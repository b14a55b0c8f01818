package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sync/errgroup"
)

// buildNetwork creates every namespace and link: per cluster a control-plane namespace
// with the LAN bridge and one namespace per node; the WAN; NAT routers.
func (l *Lab) buildNetwork(ctx context.Context) error {
	for i, co := range l.opts.Clusters {
		c := &Cluster{
			Name: co.Name, Index: i, lab: l, BehindNAT: co.BehindNAT, ProxyMode: co.ProxyMode,
			PodCIDR:         netip.MustParsePrefix(co.PodCIDR).Masked(),
			ServiceCIDR:     netip.MustParsePrefix(co.ServiceCIDR).Masked(),
			ServiceCIDRv6:   parseOptionalPrefix(co.ServiceCIDRv6),
			Netns:           l.netnsName(co.Name + "-cp"),
			APIServer:       netip.AddrPortFrom(controlPlaneIP(i), 6443),
			PublicAPIServer: netip.AddrPortFrom(uplinkIP(i), 6443),
			dir:             filepath.Join(l.Dir, co.Name),
		}
		slices, err := podSlices(c.PodCIDR, co.Nodes)
		if err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
		for j := range co.Nodes {
			n := &Node{Cluster: c, index: j, IP: nodeIP(i, j), PodCIDR: slices[j], Gateway: j < co.Gateways}
			if n.Gateway {
				n.gwIndex = j
				n.Name = fmt.Sprintf("%s-gw%d", c.Name, j+1)
				n.PublicIP = publicIP(i, j)
				n.WANIP = n.PublicIP
				if co.BehindNAT {
					n.WANIP = natGatewayIP(i, j)
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

	names := []string{l.WANNetns}
	for _, c := range l.clusters {
		names = append(names, c.Netns)
		if c.NATNetns != "" {
			names = append(names, c.NATNetns)
		}
		for _, n := range c.Nodes {
			names = append(names, n.Netns)
		}
	}
	if err := l.addNetns(ctx, names...); err != nil {
		return err
	}

	g, gctx := errgroup.WithContext(ctx)
	for _, c := range l.clusters {
		g.Go(func() error { return c.buildLAN(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return l.buildWAN(ctx)
}

// addNetns creates named namespaces with loopback up and records them for Stop.
func (l *Lab) addNetns(ctx context.Context, names ...string) error {
	var lines []string
	for _, n := range names {
		lines = append(lines, "netns add "+n)
	}
	l.mu.Lock()
	l.netnses = append(l.netnses, names...)
	l.mu.Unlock()
	if err := ipBatch(ctx, "", lines); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, n := range names {
		g.Go(func() error {
			// Routing between pods, nodes and clusters is what namespaces are for; the
			// kernel default for a new namespace is not to forward.
			return errors.Join(ipBatch(gctx, n, []string{"link set lo up"}),
				sysctls(gctx, n, "net.ipv4.ip_forward=1"))
		})
	}
	return g.Wait()
}

// buildLAN wires the cluster's nodes to a bridge in the control-plane namespace and
// routes every node's pod slice to that node: plain routing is the lab's CNI.
func (c *Cluster) buildLAN(ctx context.Context) error {
	cp := []string{
		"link add lan type bridge",
		fmt.Sprintf("addr add %s/24 dev lan", controlPlaneIP(c.Index)),
		"link set lan up",
	}
	for _, n := range c.Nodes {
		peer := fmt.Sprintf("n%d", n.index)
		cp = append(cp,
			fmt.Sprintf("link add %s type veth peer name eth0 netns %s", peer, n.Netns),
			fmt.Sprintf("link set %s master lan", peer),
			fmt.Sprintf("link set %s up", peer),
			// The control plane answers pods (the kubelet-lite's pods talk to the API
			// server directly), so it needs the way back to them.
			fmt.Sprintf("route add %s via %s", n.PodCIDR, n.IP))
	}
	if err := ipBatch(ctx, c.Netns, cp); err != nil {
		return fmt.Errorf("cluster %s LAN: %w", c.Name, err)
	}
	// Bridged frames should not traverse this namespace's iptables (br_netfilter is
	// loaded on these hosts); best effort because the knob exists only with the module.
	_ = sysctls(ctx, c.Netns, "net.bridge.bridge-nf-call-iptables=0")
	for _, n := range c.Nodes {
		lines := []string{
			fmt.Sprintf("addr add %s/24 dev eth0", n.IP),
			"link set eth0 up",
			// Like a cloud VPC's router: the rest of the world (the WAN, other
			// clusters' public API servers) through the control-plane namespace.
			fmt.Sprintf("route add default via %s", controlPlaneIP(c.Index)),
		}
		for _, o := range c.Nodes {
			if o != n {
				lines = append(lines, fmt.Sprintf("route add %s via %s", o.PodCIDR, o.IP))
			}
		}
		if err := ipBatch(ctx, n.Netns, lines); err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
	}
	return nil
}

// buildWAN joins every gateway to the WAN bridge, directly or through its cluster's
// NAT router.
func (l *Lab) buildWAN(ctx context.Context) error {
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
	for _, c := range l.clusters {
		// Every cluster's control-plane namespace is its uplink to the WAN: the API
		// server is reachable there (a broker must be), and node traffic leaves
		// masqueraded, as from a VPC with a NAT gateway.
		up := fmt.Sprintf("c%dup", c.Index)
		wan = append(wan,
			fmt.Sprintf("link add %s type veth peer name uplink netns %s", up, c.Netns),
			fmt.Sprintf("link set %s master wan", up),
			fmt.Sprintf("link set %s up", up))
		uplinks = append(uplinks, nsLines{c.Netns, []string{
			fmt.Sprintf("addr add %s/%d dev uplink", uplinkIP(c.Index), WANPrefix.Bits()),
			"link set uplink up",
		}}, nsLines{c.Netns, []string{
			"*nat",
			fmt.Sprintf("-A POSTROUTING -o uplink -s %s -j MASQUERADE", lanPrefix(c.Index)),
			fmt.Sprintf("-A POSTROUTING -o uplink -s %s -j MASQUERADE", c.PodCIDR),
			"COMMIT",
		}})
		if c.NATNetns == "" {
			for _, n := range c.Gateways() {
				peer := fmt.Sprintf("c%dg%d", c.Index, n.gwIndex)
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
			gp := fmt.Sprintf("g%d", n.gwIndex)
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
	if err := ipBatch(ctx, l.WANNetns, wan); err != nil {
		return fmt.Errorf("WAN: %w", err)
	}
	_ = sysctls(ctx, l.WANNetns, "net.bridge.bridge-nf-call-iptables=0")
	for i := 0; i < len(uplinks); i += 2 {
		if err := ipBatch(ctx, uplinks[i].netns, uplinks[i].lines); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
		if err := iptablesRestore(ctx, uplinks[i+1].netns, strings.Join(uplinks[i+1].lines, "\n")+"\n"); err != nil {
			return fmt.Errorf("uplink: %w", err)
		}
	}
	for i := 0; i < len(nat); i += 3 {
		if err := ipBatch(ctx, nat[i].netns, nat[i].lines); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		if err := ipBatch(ctx, nat[i+1].netns, nat[i+1].lines); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		if err := iptablesRestore(ctx, nat[i+2].netns, strings.Join(nat[i+2].lines, "\n")+"\n"); err != nil {
			return fmt.Errorf("NAT router: %w", err)
		}
		_ = sysctls(ctx, nat[i].netns, "net.bridge.bridge-nf-call-iptables=0")
	}
	for _, a := range after {
		if err := ipBatch(ctx, a.netns, a.lines); err != nil {
			return fmt.Errorf("gateway WAN: %w", err)
		}
	}
	// Pods on a gateway node reach the WAN (another cluster's broker) straight out of
	// wan0; like pods on any node with a public interface, they leave masqueraded, or
	// the answers would be addressed to a pod CIDR nobody on the WAN routes.
	// Cross-cluster pod traffic is not affected: it leaves through mcnet's tunnels.
	for _, c := range l.clusters {
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
	return runStdin(ctx, rules, "ip", "netns", "exec", netns, "iptables-restore", "--noflush")
}

// parseOptionalPrefix is the masked prefix s, or the zero Prefix for "".
func parseOptionalPrefix(s string) netip.Prefix {
	if s == "" {
		return netip.Prefix{}
	}
	return netip.MustParsePrefix(s).Masked()
}
