package dataplane

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// The plan is the desired kernel state of one node as plain values. buildPlan is pure
// (given the underlay resolver), so the whole policy is testable without a kernel.

// linkSpec is a link mcnet owns.
type linkSpec struct {
	Name string
	Kind Driver // DriverVXLAN or DriverWireGuard
	MTU  int
	VNI  int     // vxlan
	Port uint16  // vxlan destination port
	MAC  [6]byte // vxlan
	// ZeroUDPCsum sends the VXLAN's outer UDP checksum as zero (the cable; see
	// planVXLANCable).
	ZeroUDPCsum bool
	// Addr is an IPv4 address for the link, when it needs one (see gatewayAddr).
	Addr netip.Prefix
	// HealthAddrs are further IPv4 host addresses (global scope) the link carries:
	// the gateway's health-check addresses.
	HealthAddrs []netip.Prefix
}

// neighSpec is a permanent neighbour (ARP/NDP) entry on an mcnet link.
type neighSpec struct {
	Link string
	IP   netip.Addr
	MAC  [6]byte
}

// fdbSpec is a permanent VXLAN forwarding entry: frames for MAC go to Dst.
type fdbSpec struct {
	Link string
	MAC  [6]byte
	Dst  netip.Addr
}

// routeSpec is a route in the mcnet table. Via is invalid for point-to-point links.
type routeSpec struct {
	Dst  netip.Prefix
	Link string
	Via  netip.Addr
}

// filterSpec is mcnet's packet filter: what its nftables table must do (see
// filter_linux.go for the rules it becomes).
type filterSpec struct {
	// Local and Remote are the CIDRs between which connections keep their source
	// address: no masquerade in either direction.
	Local, Remote []netip.Prefix
	// MSS lists the tunnels whose forwarded TCP SYNs get their MSS clamped to what
	// fits the tunnel MTU.
	MSS []mssClamp
	// Ports are the VXLAN ports that accept frames only from known peers.
	Ports []portFilter
	// Encap are the VXLAN ports and VNIs of mcnet's links, whose outer UDP packets
	// conntrack never sees (chains untracked-in and untracked-out).
	Encap []encapPort
	// Remap are the prefix maps the active gateway translates (chains remap-in and
	// remap-out, present only when there are any).
	Remap []PrefixMap
}

// mssClamp is one tunnel and its MTU.
type mssClamp struct {
	Link string
	MTU  int
}

// portFilter drops VXLAN frames of one VNI arriving on a UDP port from any source
// but Peers.
type portFilter struct {
	Name  string // names the peer sets: <Name>-peers-v4 and -v6
	Port  uint16
	VNI   int
	Peers []netip.Addr
}

// encapPort is the UDP port and VNI of one of mcnet's VXLAN links.
type encapPort struct {
	Port uint16
	VNI  int
}

// wgPeerSpec is one WireGuard peer.
type wgPeerSpec struct {
	ClusterID  string
	PublicKey  Key
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
}

// wgSpec is the WireGuard device configuration.
type wgSpec struct {
	Link  string
	Port  uint16
	Peers []wgPeerSpec
}

// vxPeer remembers which remote a VXLAN FDB entry serves, for CableStatus.
type vxPeer struct {
	ClusterID string
	Endpoint  netip.AddrPort
}

// plan is the desired state of everything mcnet owns on a node.
type plan struct {
	Links   []linkSpec
	Neighs  []neighSpec
	FDB     []fdbSpec
	Routes  []routeSpec
	Rules   []netip.Prefix // "to <prefix> lookup <table>"
	Filter  filterSpec
	Sysctls map[string]string
	WG      *wgSpec
	VXPeers []vxPeer
}

// underlay describes how the main table reaches an underlay address.
type underlay struct {
	Iface string // empty: no route
	MTU   int
}

// resolver answers underlay questions; the real one asks the kernel (ip route get).
type resolver func(netip.Addr) underlay

// link names derived from the prefix.
func (c Config) vxLink() string { return c.LinkPrefix + "-vx" }
func (c Config) wgLink() string { return c.LinkPrefix + "-wg" }
func (c Config) viLink() string { return c.LinkPrefix + "-vi" }
func (c Config) ownedLinks() []string {
	return []string{c.vxLink(), c.wgLink(), c.viLink()}
}

// nftTable names mcnet's nftables table (family inet).
func (c Config) nftTable() string { return strings.ToLower(c.ChainPrefix) }

// legacyChains are the iptables chains (table/chain) earlier mcnet versions made,
// each jumped to from the built-in chain of the same name without the prefix.
func (c Config) legacyChains() [][2]string {
	return [][2]string{
		{"filter", c.ChainPrefix + "-FORWARD"},
		{"filter", c.ChainPrefix + "-INPUT"},
		{"nat", c.ChainPrefix + "-POSTROUTING"},
		{"mangle", c.ChainPrefix + "-FORWARD"},
	}
}

const defaultUnderlayMTU = 1500

// buildPlan computes the desired kernel state of a node. s must be valid.
func buildPlan(c Config, s State, resolve resolver) plan {
	p := plan{Sysctls: map[string]string{}}
	var remoteCIDRs []netip.Prefix
	for _, r := range s.Remotes {
		remoteCIDRs = append(remoteCIDRs, r.CIDRs...)
	}
	slices.SortFunc(remoteCIDRs, comparePrefix)
	remoteCIDRs = slices.Compact(remoteCIDRs)
	var tunnels []string // links that carry remote traffic out of this node
	var loose []string   // interfaces needing loose reverse-path filtering

	// mtuFor is the tunnel MTU over the underlay that reaches addr.
	mtuFor := func(d Driver, addrs ...netip.Addr) int {
		m := 0
		for _, a := range addrs {
			u := s.UnderlayMTU
			if u == 0 {
				u = resolve(a).MTU
			}
			if u == 0 {
				u = defaultUnderlayMTU
			}
			if t := u - d.Overhead(a.Is6() && !a.Is4In6()); m == 0 || t < m {
				m = t
			}
		}
		if len(addrs) == 0 {
			u := s.UnderlayMTU
			if u == 0 {
				u = defaultUnderlayMTU
			}
			m = u - d.Overhead(false)
		}
		return m
	}

	switch {
	case len(s.Remotes) == 0:
		// Nothing to reach: no links, routes or rules; the chains stay (empty of
		// pairs) so the packet filter keeps one shape while clusters come and go.
	case s.Gateway != nil:
		planVXLANCable(c, s, resolve, mtuFor, &p)
		planWireGuardCable(c, s, resolve, mtuFor, &p)
		for _, l := range p.Links {
			tunnels = append(tunnels, l.Name)
		}
		// The gateway also terminates the intra-cluster VXLAN from the other nodes.
		// It has no FDB entries: replies go back through the cluster network.
		p.Links = append(p.Links, linkSpec{
			Name: c.viLink(), Kind: DriverVXLAN, VNI: intraVNI, Port: c.IntraClusterPort,
			MAC: gatewayMAC(s.ClusterID), MTU: mtuFor(DriverVXLAN), Addr: gatewayAddr(s.ClusterID),
			HealthAddrs: healthAddrs(s.Gateway.HealthCheckIPs),
		})
		// Only the cluster's own nodes send into the intra-cluster VXLAN: frames on
		// its port from anywhere else would land in the pod network.
		p.Filter.Ports = append(p.Filter.Ports, portFilter{Name: "intra", Port: c.IntraClusterPort, VNI: intraVNI, Peers: s.Gateway.ClusterNodes})
		// Packets from other nodes arrive on the intra VXLAN while the reverse route
		// to their pods goes through the cluster network: strict rp_filter drops them.
		loose = append(loose, p.Links[len(p.Links)-1].Name)
	case s.ActiveGateway.IsValid():
		gw := s.ActiveGateway.Unmap()
		mac := gatewayMAC(s.ClusterID)
		p.Links = append(p.Links, linkSpec{
			Name: c.viLink(), Kind: DriverVXLAN, VNI: intraVNI, Port: c.IntraClusterPort,
			MAC: nodeMAC(s.ClusterID), MTU: mtuFor(DriverVXLAN, gw),
		})
		p.FDB = append(p.FDB, fdbSpec{Link: c.viLink(), MAC: mac, Dst: gw})
		addVXLANRoutes(&p, c.viLink(), mac, gw, remoteCIDRs)
		tunnels = append(tunnels, c.viLink())
		// The gateway never sends into the intra-cluster VXLAN (it has no FDB entries),
		// so frames to it on this node can only be legitimate from the gateway.
		p.Filter.Ports = append(p.Filter.Ports, portFilter{Name: "intra", Port: c.IntraClusterPort, VNI: intraVNI, Peers: []netip.Addr{gw}})
		// Replies from remote clusters come back from the gateway through the
		// cluster network, but their reverse route points into the intra VXLAN.
		if u := resolve(gw); u.Iface != "" {
			loose = append(loose, u.Iface)
		}
	}
	if len(p.Links) > 0 {
		for _, prefix := range remoteCIDRs {
			p.Rules = append(p.Rules, prefix)
		}
	}

	// Forwarding is needed on every node that routes pods' packets into a tunnel.
	_, v6 := families(s)
	p.Sysctls["net/ipv4/ip_forward"] = "1"
	if v6 {
		p.Sysctls["net/ipv6/conf/all/forwarding"] = "1"
	}
	loose = append(loose, tunnels...)
	loose = append(loose, s.LooseRPFilter...)
	for _, l := range loose {
		// rp_filter uses max(all, iface): 2 on the interface wins over all=1.
		// https://docs.kernel.org/networking/ip-sysctl.html#rp-filter
		p.Sysctls["net/ipv4/conf/"+l+"/rp_filter"] = "2"
	}

	p.Filter.Local = slices.Clone(s.LocalCIDRs)
	p.Filter.Remote = remoteCIDRs
	if s.Gateway != nil && len(remoteCIDRs) > 0 {
		p.Filter.Remap = slices.Clone(s.Remap)
	}
	for _, l := range p.Links {
		if l.Kind == DriverVXLAN {
			// The outer packets of a tunnel need no connection tracking: nothing
			// translates them here, and their source ports (one per inner flow)
			// never make a reply tuple. Tracking them cost a conntrack lookup per
			// packet on both ends and an entry per inner flow (see
			// BenchmarkVXLANAblation). The inner packets are tracked as before:
			// decapsulation drops the outer packet's conntrack reference.
			p.Filter.Encap = append(p.Filter.Encap, encapPort{Port: l.Port, VNI: l.VNI})
		}
	}
	if len(remoteCIDRs) > 0 {
		// Pods do not know the tunnel MTU; clamp their SYNs to it.
		for _, l := range p.Links {
			if slices.Contains(tunnels, l.Name) {
				p.Filter.MSS = append(p.Filter.MSS, mssClamp{Link: l.Name, MTU: l.MTU})
			}
		}
	}
	sortPlan(&p)
	return p
}

// healthAddrs turns health-check IPs into host prefixes for the gateway's intra VXLAN
// link, which exists whenever there is a remote to probe. A local address is reached
// from any interface (Linux's weak host model), so probes arriving through a cable
// are delivered, and replies routed into the cable leave with it as source.
func healthAddrs(ips []netip.Addr) []netip.Prefix {
	var out []netip.Prefix
	for _, ip := range ips {
		if ip = ip.Unmap(); ip.Is4() {
			out = append(out, netip.PrefixFrom(ip, 32))
		}
	}
	slices.SortFunc(out, comparePrefix)
	return slices.Compact(out)
}

// gatewayMAC is the intra-cluster VXLAN MAC of whichever node is the active gateway,
// so a failover only moves one FDB entry on the other nodes.
func gatewayMAC(cluster string) [6]byte { return clusterMAC(cluster + "/gateway") }

// gatewayAddr is a link-scope address for the gateway's intra-cluster VXLAN. The
// kernel's reverse-path check rejects packets arriving on an interface without an
// IPv4 address whenever their reverse route leaves through another interface, even
// in loose mode ("no_addr" in __fib_validate_source,
// https://elixir.bootlin.com/linux/v6.18/source/net/ipv4/fib_frontend.c), and the
// replies to other nodes' pods leave through the cluster network, not this device.
func gatewayAddr(cluster string) netip.Prefix {
	mac := gatewayMAC(cluster)
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{169, 254, mac[4], mac[5]}), 32)
}

// nodeMAC is the intra-cluster VXLAN MAC of non-gateway nodes. They may share it:
// the gateway never sends to them through the VXLAN, and it differs from gatewayMAC
// (the kernel drops VXLAN frames whose source MAC is the receiver's own).
func nodeMAC(cluster string) [6]byte { return clusterMAC(cluster + "/node") }

// families reports which IP families the state uses.
func families(s State) (v4, v6 bool) {
	all := slices.Clone(s.LocalCIDRs)
	for _, r := range s.Remotes {
		all = append(all, r.CIDRs...)
	}
	for _, p := range all {
		if p.Addr().Is6() {
			v6 = true
		} else {
			v4 = true
		}
	}
	return v4, v6
}

// sortPlan gives every list a canonical order so plans compare and render stably.
func sortPlan(p *plan) {
	slices.SortFunc(p.Links, func(a, b linkSpec) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(p.Neighs, func(a, b neighSpec) int {
		return cmp.Or(cmp.Compare(a.Link, b.Link), a.IP.Compare(b.IP))
	})
	slices.SortFunc(p.FDB, func(a, b fdbSpec) int {
		return cmp.Or(cmp.Compare(a.Link, b.Link), slices.Compare(a.MAC[:], b.MAC[:]))
	})
	slices.SortFunc(p.Routes, func(a, b routeSpec) int { return comparePrefix(a.Dst, b.Dst) })
	slices.SortFunc(p.Rules, comparePrefix)
	slices.SortFunc(p.Filter.Local, comparePrefix)
	slices.SortFunc(p.Filter.MSS, func(a, b mssClamp) int { return cmp.Compare(a.Link, b.Link) })
	slices.SortFunc(p.Filter.Ports, func(a, b portFilter) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(p.Filter.Encap, func(a, b encapPort) int { return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.VNI, b.VNI)) })
	if p.WG != nil {
		slices.SortFunc(p.WG.Peers, func(a, b wgPeerSpec) int { return cmp.Compare(a.ClusterID, b.ClusterID) })
	}
}

func comparePrefix(a, b netip.Prefix) int {
	return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
}

// ipNet converts a prefix for the netlink API.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// prefixOf converts back; ok is false for nil or malformed values.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func macString(m [6]byte) string { return net.HardwareAddr(m[:]).String() }

// String renders a route the way ip route prints it, for logs and errors.
func (r routeSpec) String() string {
	if r.Via.IsValid() {
		return fmt.Sprintf("%s via %s dev %s onlink", r.Dst, r.Via, r.Link)
	}
	return fmt.Sprintf("%s dev %s", r.Dst, r.Link)
}
