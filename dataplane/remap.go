package dataplane

import (
	"fmt"
	"net/netip"
)

// PrefixMap is a 1:1 map between this cluster's real pod CIDR and the global range
// the other clusters reach it at (globalnet: clusters whose networks overlap). The
// active gateway translates both ways, statefully (nftables prefix NAT):
//
//   - packets leaving for a remote cluster with a source in Real leave with the
//     source at the same offset in Global (remap-out, postrouting, before
//     keep-source);
//   - packets arriving for an address in Global are sent to the same offset in Real
//     (remap-in, prerouting, before kube-proxy's dstnat chains).
//
// Replies are translated back by conntrack. Each pod keeps one stable global
// address, and the destination sees it as the source.
//
// A Stateless map (the service range) is translated without conntrack instead, before
// it (remap-svc-in, prerouting priority raw; remap-svc-out, postrouting after srcnat),
// so the packet reaches conntrack, and kube-proxy's DNAT, with the real ClusterIP: a
// hook runs only one DNAT per connection, and kube-proxy's must be it.
type PrefixMap struct {
	Real      netip.Prefix `json:"real"`
	Global    netip.Prefix `json:"global"`
	Stateless bool         `json:"stateless,omitempty"`
}

func (m PrefixMap) String() string { return m.Real.String() + "<->" + m.Global.String() }

// validateRemap checks the State's maps: IPv4, equal sizes, Real one of the local
// CIDRs' subnets, Global overlapping no local or remote CIDR.
func (s State) validateRemap() []error {
	var errs []error
	for _, m := range s.Remap {
		switch {
		case !m.Real.IsValid() || !m.Global.IsValid() || m.Real != m.Real.Masked() || m.Global != m.Global.Masked():
			errs = append(errs, fmt.Errorf("remap %s: not masked prefixes", m))
			continue
		case !m.Real.Addr().Is4() || !m.Global.Addr().Is4():
			errs = append(errs, fmt.Errorf("remap %s: IPv4 only", m))
			continue
		case m.Real.Bits() != m.Global.Bits():
			errs = append(errs, fmt.Errorf("remap %s: prefixes of different sizes", m))
			continue
		}
		inLocal := false
		for _, l := range s.LocalCIDRs {
			if l.Bits() <= m.Real.Bits() && l.Contains(m.Real.Addr()) {
				inLocal = true
			}
			if l.Overlaps(m.Global) {
				errs = append(errs, fmt.Errorf("remap %s: global range overlaps local CIDR %s", m, l))
			}
		}
		if !inLocal {
			errs = append(errs, fmt.Errorf("remap %s: real range is not inside the local CIDRs", m))
		}
		for _, r := range s.Remotes {
			for _, p := range r.CIDRs {
				if p.Overlaps(m.Global) {
					errs = append(errs, fmt.Errorf("remap %s: global range overlaps remote %s CIDR %s", m, r.ClusterID, p))
				}
			}
		}
	}
	return errs
}
