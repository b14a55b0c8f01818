package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/inspect"
)

// Globalnet prints the fleet's global address map (cluster → global pod and service
// ranges, from the fleet table the components trust) and checks that every cluster
// holds the same map: two clusters with different tables reach a remapped cluster at
// different addresses, and one of them at addresses its gateway does not translate.
func Globalnet(snaps []*inspect.Snapshot) []Check {
	type row struct {
		remapped  bool
		pods, svc string
	}
	var out []Check
	seen := map[string]row{}    // cluster → row, from the first table that lists it
	from := map[string]string{} // cluster → which cluster's table gave the row
	var names []string
	for _, s := range snaps {
		if s.Fleet == nil {
			continue
		}
		for _, m := range s.Fleet.Spec.Clusters {
			r := row{m.Remapped, strings.Join(m.GlobalPodCIDRs, ","), strings.Join(m.GlobalServiceCIDRs, ",")}
			prev, ok := seen[m.Name]
			switch {
			case !ok:
				seen[m.Name], from[m.Name] = r, s.ClusterID
				names = append(names, m.Name)
			case prev != r:
				out = append(out, fail("MCN1206", s.ClusterID, "clusters agree on the global address map",
					"%s's fleet table reaches %s at %s, %s's at %s", s.ClusterID, m.Name, describeRow(r.remapped, r.pods, r.svc), from[m.Name], describeRow(prev.remapped, prev.pods, prev.svc)))
			}
		}
	}
	slices.Sort(names)
	for _, n := range names {
		if r := seen[n]; r.remapped {
			out = append(out, ok("networks", n, "reached at global ranges: "+describeRow(true, r.pods, r.svc)))
		}
	}
	return out
}

func describeRow(remapped bool, pods, svc string) string {
	if !remapped {
		return "its own addresses"
	}
	return fmt.Sprintf("pods %s, services %s", dashIfEmpty(pods), dashIfEmpty(svc))
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// RemapKernel checks that the active gateway of a remapped cluster translates what the
// fleet table says: the prefix maps its gateway reads back from the kernel's remap
// chains (Gateway status.remap) against the cluster's real and global ranges in the
// table. A difference means other clusters reach its pods or services at addresses
// nothing translates (or translates elsewhere).
func RemapKernel(s *inspect.Snapshot) []Check {
	id := s.ClusterID
	m := s.FleetMember(id)
	active := s.ActiveGateways()
	if m == nil || len(active) != 1 {
		return nil
	}
	want := wantRemap(m)
	g := active[0]
	name := "the gateway's remap chains match the fleet table"
	if len(want) == 0 && len(g.Status.Remap) == 0 {
		return nil
	}
	got := make([]string, 0, len(g.Status.Remap))
	for _, r := range g.Status.Remap {
		got = append(got, remapString(r))
	}
	slices.Sort(got)
	if slices.Equal(got, want) {
		return []Check{ok("datapath", id, fmt.Sprintf("%s (%s)", name, strings.Join(got, ", ")))}
	}
	var missing, extra []string
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, x := range got {
		if !slices.Contains(want, x) {
			extra = append(extra, x)
		}
	}
	msg := fmt.Sprintf("gateway %s", g.Name)
	if len(missing) > 0 {
		msg += " does not translate " + strings.Join(missing, ", ")
	}
	if len(extra) > 0 {
		if len(missing) > 0 {
			msg += " and"
		}
		msg += " translates " + strings.Join(extra, ", ") + ", which the fleet table does not hold"
	}
	return []Check{fail("MCN1207", id, name, "%s", msg)}
}

// wantRemap is what the table says the cluster's gateway translates, as remapString
// prints it, sorted.
func wantRemap(m *mcnetv1.FleetMember) []string {
	if !m.Remapped {
		return nil
	}
	var out []string
	for _, k := range []struct {
		real, global []string
		service      bool
	}{{m.PodCIDRs, m.GlobalPodCIDRs, false}, {m.ServiceCIDRs, m.GlobalServiceCIDRs, true}} {
		real, ok := firstV4String(k.real)
		if !ok || len(k.global) == 0 {
			continue
		}
		out = append(out, remapString(mcnetv1.RemapStatus{Real: real, Global: k.global[0], Service: k.service}))
	}
	slices.Sort(out)
	return out
}

func remapString(r mcnetv1.RemapStatus) string {
	kind := "pods"
	if r.Service {
		kind = "services"
	}
	return fmt.Sprintf("%s %s<->%s", kind, canonical(r.Real), canonical(r.Global))
}

// canonical is the masked form of a CIDR, or the string as given when it does not parse.
func canonical(s string) string {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked().String()
	}
	return s
}

func firstV4String(cidrs []string) (string, bool) {
	for _, s := range cidrs {
		if p, err := netip.ParsePrefix(s); err == nil && p.Addr().Is4() {
			return p.Masked().String(), true
		}
	}
	return "", false
}
