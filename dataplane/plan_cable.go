package dataplane

import (
	"net/netip"
	"slices"
)

// Cable planning: what buildPlan adds for each cable driver to reach the remote
// clusters, and how a VXLAN peer is addressed on its link.

// planVXLANCable adds the VXLAN cable to every vxlan remote. Its port accepts frames
// only from the remote gateways' published addresses: the cable has no
// authentication, so anyone else could otherwise inject packets into the cluster.
func planVXLANCable(c Config, s State, resolve resolver, mtuFor func(Driver, ...netip.Addr) int, p *plan) {
	var eps, peers []netip.Addr
	for _, r := range s.Remotes {
		if r.Cable.Driver != DriverVXLAN {
			continue
		}
		ep := pickEndpoint(r.Cable.Endpoints, resolve)
		eps = append(eps, ep)
		for _, e := range r.Cable.Endpoints {
			peers = append(peers, e.Unmap())
		}
		mac := clusterMAC(r.ClusterID)
		p.FDB = append(p.FDB, fdbSpec{Link: c.vxLink(), MAC: mac, Dst: ep})
		addVXLANRoutes(p, c.vxLink(), mac, ep, r.CIDRs)
		p.VXPeers = append(p.VXPeers, vxPeer{ClusterID: r.ClusterID, Endpoint: netip.AddrPortFrom(ep, s.Gateway.vxlanPort())})
	}
	if len(eps) == 0 {
		return
	}
	slices.SortFunc(peers, netip.Addr.Compare)
	p.Filter.Ports = append(p.Filter.Ports, portFilter{Name: "cable", Port: s.Gateway.vxlanPort(), VNI: interVNI, Peers: slices.Compact(peers)})
	p.Links = append(p.Links, linkSpec{
		Name: c.vxLink(), Kind: DriverVXLAN, VNI: interVNI, Port: s.Gateway.vxlanPort(),
		MAC: clusterMAC(s.ClusterID), MTU: mtuFor(DriverVXLAN, eps...),
		// RFC 7348 section 5: the outer UDP checksum SHOULD be zero over IPv4. It
		// also must be: Linux fills it in at once (local checksum offload) while the
		// packet stays CHECKSUM_PARTIAL for the inner header, and a NAT on the way
		// (a veth or VM host doing 1:1 NAT) then updates it as if it were a partial
		// sum, so the NATed gateway drops every packet (UdpInCsumErrors).
		ZeroUDPCsum: true,
	})
}

// planWireGuardCable adds the WireGuard device with one peer per wireguard remote.
// Its port needs no filter: WireGuard drops whatever is not from a configured peer.
func planWireGuardCable(c Config, s State, resolve resolver, mtuFor func(Driver, ...netip.Addr) int, p *plan) {
	wg := &wgSpec{Link: c.wgLink(), Port: s.Gateway.wireguardPort()}
	var eps []netip.Addr
	for _, r := range s.Remotes {
		if r.Cable.Driver != DriverWireGuard {
			continue
		}
		ep := pickEndpoint(r.Cable.Endpoints, resolve)
		eps = append(eps, ep)
		port := r.Cable.Port
		if port == 0 {
			port = DefaultWireGuardPort
		}
		cidrs := slices.Clone(r.CIDRs)
		slices.SortFunc(cidrs, comparePrefix)
		wg.Peers = append(wg.Peers, wgPeerSpec{
			ClusterID: r.ClusterID, PublicKey: r.Cable.PublicKey,
			Endpoint: netip.AddrPortFrom(ep, port), AllowedIPs: cidrs,
		})
		// WireGuard is a layer 3 device: routes need no next hop.
		for _, prefix := range r.CIDRs {
			p.Routes = append(p.Routes, routeSpec{Dst: prefix, Link: c.wgLink()})
		}
	}
	if len(eps) == 0 {
		return
	}
	p.WG = wg
	p.Links = append(p.Links, linkSpec{Name: c.wgLink(), Kind: DriverWireGuard, MTU: mtuFor(DriverWireGuard, eps...)})
}

// addVXLANRoutes routes prefixes through a VXLAN link to the peer whose device has
// MAC. The next hop is a static neighbour on the link, so no ARP crosses the tunnel;
// the peer accepts the frames because their destination MAC is its own.
func addVXLANRoutes(p *plan, link string, mac [6]byte, peer netip.Addr, prefixes []netip.Prefix) {
	var need4, need6 bool
	for _, prefix := range prefixes {
		via := nextHop(peer, mac, prefix.Addr().Is6())
		p.Routes = append(p.Routes, routeSpec{Dst: prefix, Link: link, Via: via})
		need4 = need4 || !prefix.Addr().Is6()
		need6 = need6 || prefix.Addr().Is6()
	}
	if need4 {
		p.Neighs = append(p.Neighs, neighSpec{Link: link, IP: nextHop(peer, mac, false), MAC: mac})
	}
	if need6 {
		p.Neighs = append(p.Neighs, neighSpec{Link: link, IP: nextHop(peer, mac, true), MAC: mac})
	}
}

// nextHop is the on-link next hop standing for a VXLAN peer: its underlay address
// when the families match, otherwise a link-local address derived from its MAC.
func nextHop(peer netip.Addr, mac [6]byte, v6 bool) netip.Addr {
	switch {
	case !v6 && peer.Is4():
		return peer
	case !v6:
		return netip.AddrFrom4([4]byte{169, 254, mac[4], mac[5]})
	default:
		// EUI-64, as the peer's kernel derives its own link-local address.
		return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: mac[0] ^ 0x02, mac[1], mac[2], 0xff, 0xfe, mac[3], mac[4], mac[5]})
	}
}

// pickEndpoint returns the first endpoint the main table can route, else the first.
func pickEndpoint(eps []netip.Addr, resolve resolver) netip.Addr {
	for _, e := range eps {
		if resolve(e.Unmap()).Iface != "" {
			return e.Unmap()
		}
	}
	if len(eps) == 0 {
		return netip.Addr{}
	}
	return eps[0].Unmap()
}
