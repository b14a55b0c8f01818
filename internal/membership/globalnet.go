package membership

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// A remapped member (its networks overlap another member's, see mcnetv1.GlobalnetSpec)
// is reached by every other cluster at its global pod range, mapped 1:1 onto its IPv4
// pod CIDR by its own gateway; its IPv4 service CIDRs are not reachable across clusters.
// What it publishes (subnets, health-check and pod addresses) is in its real networks
// and is judged against them; receivers then translate it with the functions here.

// checkGlobal is the table's own consistency check of a member's remap: a remapped
// member needs one global range the size of its IPv4 pod CIDR.
func (m *Member) checkGlobal() error {
	if !m.Remapped {
		return nil
	}
	pod, ok := m.v4Pod()
	switch {
	case !ok:
		return errors.New("remapped without an IPv4 pod CIDR")
	case len(m.GlobalPodCIDRs) != 1 || !m.GlobalPodCIDRs[0].Addr().Is4():
		return errors.New("remapped without one IPv4 global pod CIDR")
	case m.GlobalPodCIDRs[0].Bits() != pod.Bits():
		return fmt.Errorf("global pod CIDR %s is not the size of pod CIDR %s", m.GlobalPodCIDRs[0], pod)
	}
	return nil
}

func (m *Member) v4Pod() (netip.Prefix, bool) {
	for _, p := range m.PodCIDRs {
		if p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// Remap is a member's pod CIDR and the global range others reach it at; ok is false
// when the member is not remapped.
func (m *Member) Remap() (real, global netip.Prefix, ok bool) {
	if !m.Remapped || m.checkGlobal() != nil {
		return real, global, false
	}
	real, _ = m.v4Pod()
	return real, m.GlobalPodCIDRs[0], true
}

// Reach is the address other clusters use for a, an address the member published
// inside its own networks: the same address unless the member is remapped, then its
// global twin for a pod address; ok is false for an address no other cluster can
// reach (an IPv4 service address of a remapped member).
func (m *Member) Reach(a netip.Addr) (netip.Addr, bool) {
	real, global, remapped := m.Remap()
	a = a.Unmap()
	switch {
	case !remapped || !a.Is4():
		return a, true
	case real.Contains(a):
		return mcnetv1.MapPrefix(a, real, global), true
	}
	return netip.Addr{}, false
}

// ReachPrefix is Reach for a published subnet inside the member's allocation.
func (m *Member) ReachPrefix(p netip.Prefix) (netip.Prefix, bool) {
	real, global, remapped := m.Remap()
	switch {
	case !remapped || !p.Addr().Is4():
		return p, true
	case real.Bits() <= p.Bits() && real.Contains(p.Addr()):
		return netip.PrefixFrom(mcnetv1.MapPrefix(p.Addr(), real, global), p.Bits()), true
	}
	return netip.Prefix{}, false
}

// Routed is what the other clusters route to the member: its allocation, with a
// remapped member's IPv4 networks replaced by its global pod range.
func (m *Member) Routed() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range m.CIDRs() {
		if r, ok := m.ReachPrefix(p); ok && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
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

// Reaches says whether a lies inside what this cluster routes to the member (Routed).
func (m *Member) Reaches(a netip.Addr) bool {
	return slices.ContainsFunc(m.Routed(), func(p netip.Prefix) bool { return p.Contains(a.Unmap()) })
}
