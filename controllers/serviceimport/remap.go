package serviceimport

import (
	"fmt"
	"net/netip"

	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/mcnet-io/mcnet/internal/membership"
)

// reachEndpoints returns accepted endpoints of remote cluster c (published inside
// its own networks) at the addresses this cluster reaches them at: a remapped
// cluster's pod and service addresses become their global twins (see
// mcnetv1.GlobalnetSpec).
// DNS's headless records and the ClusterSetIP's EndpointSlices both read the
// imported slices, so both answer what is reachable from here. An endpoint outside
// the remapped networks comes back as a rejection.
func reachEndpoints(t *membership.Table, c, slice string, eps []discoveryv1.Endpoint) ([]discoveryv1.Endpoint, []membership.Rejection) {
	m, ok := t.Member(c)
	if !ok {
		return nil, nil // acceptEndpoints accepted nothing
	}
	if len(m.Maps()) == 0 {
		return eps, nil
	}
	var out []discoveryv1.Endpoint
	var rej []membership.Rejection
	for i, ep := range eps {
		ep = *ep.DeepCopy()
		ok := true
		for j, s := range ep.Addresses {
			a, _ := netip.ParseAddr(s) // acceptEndpoints parsed it
			r, reachable := m.Reach(a)
			if !reachable {
				ok = false
				rej = append(rej, membership.Rejection{Cluster: c, Object: "EndpointSlice " + slice, Field: fmt.Sprintf("endpoints[%d].addresses[%d]", i, j), Value: s,
					Reason: "outside the remapped networks of a remapped cluster"})
				continue
			}
			ep.Addresses[j] = r.String()
		}
		if ok {
			out = append(out, ep)
		}
	}
	return out, rej
}
