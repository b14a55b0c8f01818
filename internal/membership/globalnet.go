package membership

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// A remapped member (its networks overlap another member's, see mcnetv1.GlobalnetSpec)
// is reached by every other cluster at its global pod and service ranges, mapped 1:1
// onto its IPv4 pod and service CIDRs by its own gateway. What it publishes (subnets,
// health-check and endpoint addresses) is in its real networks and is judged against
// them; receivers then translate it with the functions here.

// Map is one of a remapped member's networks and the global range others reach it at.
type Map struct {
	Real, Global netip.Prefix
	// Service marks the service range (translated before conntrack, so that
	// kube-proxy's DNAT of the real ClusterIP still applies).
	Service bool
}

// checkGlobal is the table's own consistency check of a member's remap: a remapped
// member needs one global range of the size of each of its IPv4 pod and service CIDRs.
func (m *Member) checkGlobal() error {
	if !m.Remapped {
		return nil
	}
	for _, k := range []struct {
		what         string
		real, global []netip.Prefix
	}{{"pod", m.PodCIDRs, m.GlobalPodCIDRs}, {"service", m.ServiceCIDRs, m.GlobalServiceCIDRs}} {
		real, ok := firstV4(k.real)
		switch {
		case !ok && k.what == "pod":
			return errors.New("remapped without an IPv4 pod CIDR")
		case !ok:
			continue
		case len(k.global) != 1 || !k.global[0].Addr().Is4():
			return fmt.Errorf("remapped without one IPv4 global %s CIDR", k.what)
		case k.global[0].Bits() != real.Bits():
			return fmt.Errorf("global %s CIDR %s is not the size of %s", k.what, k.global[0], real)
		}
	}
	return nil
}

func firstV4(ps []netip.Prefix) (netip.Prefix, bool) {
	for _, p := range ps {
		if p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Maps are the member's remapped networks (none unless the table remaps it).
func (m *Member) Maps() []Map {
	if !m.Remapped || m.checkGlobal() != nil {
		return nil
	}
	var out []Map
	if real, ok := firstV4(m.PodCIDRs); ok {
		out = append(out, Map{Real: real, Global: m.GlobalPodCIDRs[0]})
	}
	if real, ok := firstV4(m.ServiceCIDRs); ok {
		out = append(out, Map{Real: real, Global: m.GlobalServiceCIDRs[0], Service: true})
	}
	return out
}

// Reach is the address other clusters use for a, an address the member published
// inside its own networks: the same address unless the member is remapped, then its
// global twin; ok is false for an IPv4 address of a remapped member outside its
// remapped networks.
func (m *Member) Reach(a netip.Addr) (netip.Addr, bool) {
	maps := m.Maps()
	a = a.Unmap()
	if len(maps) == 0 || !a.Is4() {
		return a, true
	}
	for _, mp := range maps {
		if mp.Real.Contains(a) {
			return mcnetv1.MapPrefix(a, mp.Real, mp.Global), true
		}
	}
	return netip.Addr{}, false
}

// ReachPrefix is Reach for a published subnet inside the member's allocation.
func (m *Member) ReachPrefix(p netip.Prefix) (netip.Prefix, bool) {
	maps := m.Maps()
	if len(maps) == 0 || !p.Addr().Is4() {
		return p, true
	}
	for _, mp := range maps {
		if mp.Real.Bits() <= p.Bits() && mp.Real.Contains(p.Addr()) {
			return netip.PrefixFrom(mcnetv1.MapPrefix(p.Addr(), mp.Real, mp.Global), p.Bits()), true
		}
	}
	return netip.Prefix{}, false
}

// Routed is what the other clusters route to the member: its allocation, with a
// remapped member's IPv4 networks replaced by their global ranges.
func (m *Member) Routed() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range m.CIDRs() {
		if r, ok := m.ReachPrefix(p); ok && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// Reaches says whether a lies inside what this cluster routes to the member (Routed).
func (m *Member) Reaches(a netip.Addr) bool {
	return slices.ContainsFunc(m.Routed(), func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
}

// Remapped lists the table's remapped members, sorted by name.
func (t *Table) Remapped() []*Member {
	var out []*Member
	for _, n := range t.Names() {
		if m := t.members[n]; m.Remapped {
			out = append(out, m)
		}
	}
	return out
}
