package agent

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/membership"
)

// TestBuildStateRemap: east and west have the same networks and are remapped, north
// has its own. Each cluster routes a remapped remote's global pod range and none of
// its service range, a plain remote's real networks; the gateway of a remapped
// cluster gets its own prefix map; health checks go to the global twin.
func TestBuildStateRemap(t *testing.T) {
	member := func(name, pod, svc, global, globalSvc string, remapped bool) mcnetv1.FleetMember {
		m := mcnetv1.FleetMember{Name: name, Cable: mcnetv1.CableVXLAN, CablePort: 4789, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}, Remapped: remapped}
		if global != "" {
			m.GlobalPodCIDRs, m.GlobalServiceCIDRs = []string{global}, []string{globalSvc}
		}
		return m
	}
	tab, err := membership.New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		member("east", "10.244.0.0/16", "10.96.0.0/16", "100.64.0.0/16", "100.65.0.0/16", true),
		member("west", "10.244.0.0/16", "10.96.0.0/16", "100.66.0.0/16", "100.67.0.0/16", true),
		member("north", "10.30.0.0/16", "10.130.0.0/16", "", "", false),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	p := netip.MustParsePrefix
	eps := []mcnetv1.Endpoint{
		endpoint("east", mcnetv1.CableVXLAN, "10.244.0.0/16", "10.96.0.0/16"),
		endpoint("west", mcnetv1.CableVXLAN, "10.244.0.0/16", "10.96.0.0/16"),
		endpoint("north", mcnetv1.CableVXLAN, "10.30.0.0/16", "10.130.0.0/16"),
	}
	routed := func(s dataplane.State) map[string][]netip.Prefix {
		out := map[string][]netip.Prefix{}
		for _, r := range s.Remotes {
			out[r.ClusterID] = r.CIDRs
		}
		return out
	}
	for _, tc := range []struct {
		local     string
		cidrs     []netip.Prefix
		wantRoute map[string][]netip.Prefix
		wantRemap []dataplane.PrefixMap
	}{
		{"east", []netip.Prefix{p("10.244.0.0/16"), p("10.96.0.0/16")},
			map[string][]netip.Prefix{"west": {p("100.66.0.0/16"), p("100.67.0.0/16")}, "north": {p("10.30.0.0/16"), p("10.130.0.0/16")}},
			[]dataplane.PrefixMap{{Real: p("10.244.0.0/16"), Global: p("100.64.0.0/16")}, {Real: p("10.96.0.0/16"), Global: p("100.65.0.0/16"), Stateless: true}}},
		{"north", []netip.Prefix{p("10.30.0.0/16"), p("10.130.0.0/16")},
			map[string][]netip.Prefix{"east": {p("100.64.0.0/16"), p("100.65.0.0/16")}, "west": {p("100.66.0.0/16"), p("100.67.0.0/16")}},
			nil},
	} {
		l := Local{ClusterID: tc.local, Fleet: "prod", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: tc.cidrs}
		s, bad, rej := BuildState(l, tab, eps, &dataplane.Gateway{}, netip.Addr{})
		if len(bad) > 0 || len(rej) > 0 {
			t.Fatalf("%s: bad %v, rejected %v", tc.local, bad, rej)
		}
		opt := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
		if diff := cmp.Diff(tc.wantRoute, routed(s), opt); diff != "" {
			t.Errorf("%s routes (-want +got):\n%s", tc.local, diff)
		}
		if diff := cmp.Diff(tc.wantRemap, s.Remap, opt); diff != "" {
			t.Errorf("%s remap (-want +got):\n%s", tc.local, diff)
		}
		if err := s.Validate(); err != nil {
			t.Errorf("%s: %v", tc.local, err)
		}
	}
	if a, ok := ReachHealthCheck(tab, "west", netip.MustParseAddr("10.244.3.1")); !ok || a.String() != "100.66.3.1" {
		t.Errorf("health check of west at %s (%v), want 100.66.3.1", a, ok)
	}
	if a, ok := ReachHealthCheck(tab, "north", netip.MustParseAddr("10.30.0.1")); !ok || a.String() != "10.30.0.1" {
		t.Errorf("health check of north at %s (%v), want 10.30.0.1", a, ok)
	}
}
