package gateway

import (
	"net/netip"

	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// reachable turns the subnets a member published (inside its real allocation) into
// what this cluster routes to it: for a remapped member its global pod range in
// place of its IPv4 pod subnets, and none of its IPv4 service subnets, which no
// other cluster can tell apart from its own.
func reachable(m *membership.Member, published []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range published {
		if r, ok := m.ReachPrefix(p); ok {
			out = append(out, r)
		}
	}
	return out
}

// localRemap is the prefix map of the local cluster when the fleet table remaps it.
func localRemap(t *membership.Table, local string) []dataplane.PrefixMap {
	m, ok := t.Member(local)
	if !ok {
		return nil
	}
	real, global, ok := m.Remap()
	if !ok {
		return nil
	}
	return []dataplane.PrefixMap{{Real: real, Global: global}}
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
