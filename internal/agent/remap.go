package agent

import (
	"net/netip"

	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// reachable turns the subnets a member published (inside its real allocation) into
// what this cluster routes to it: for a remapped member the global twins of its IPv4
// subnets.
func reachable(m *membership.Member, published []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range published {
		if r, ok := m.ReachPrefix(p); ok {
			out = append(out, r)
		}
	}
	return out
}

// localRemap is the prefix maps of the local cluster when the fleet table remaps it.
func localRemap(t *membership.Table, local string) []dataplane.PrefixMap {
	m, ok := t.Member(local)
	if !ok {
		return nil
	}
	var out []dataplane.PrefixMap
	for _, mp := range m.Maps() {
		out = append(out, dataplane.PrefixMap{Real: mp.Real, Global: mp.Global, Stateless: mp.Service})
	}
	return out
}

// ReachHealthCheck is the address this cluster probes for a member's published
// health-check address a: its global twin when the member is remapped.
func ReachHealthCheck(t *membership.Table, cluster string, a netip.Addr) (netip.Addr, bool) {
	m, ok := t.Member(cluster)
	if !ok {
		return netip.Addr{}, false
	}
	return m.Reach(a)
}
