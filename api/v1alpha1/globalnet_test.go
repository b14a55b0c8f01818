package v1alpha1

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// overlapFleet has east and west built from the same defaults and north on ranges of
// its own.
func overlapFleet(pool string) *ClusterSet {
	cs := &ClusterSet{
		ObjectMeta: metav1.ObjectMeta{Name: "prod"},
		Spec: ClusterSetSpec{
			Broker: BrokerSpec{Cluster: "east", Server: "https://hub.example.com:6443"},
			Clusters: []ClusterSpec{
				{Name: "east", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/16"}},
				{Name: "west", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.96.0.0/16"}},
				{Name: "north", PodCIDRs: []string{"10.30.0.0/16"}, ServiceCIDRs: []string{"10.130.0.0/16"}},
			},
		},
	}
	if pool != "" {
		cs.Spec.Globalnet = &GlobalnetSpec{CIDR: pool}
	}
	SetDefaults_ClusterSet(cs)
	return cs
}

func TestValidateOverlapNeedsGlobalnet(t *testing.T) {
	errs := ValidateClusterSet(overlapFleet(""))
	if len(errs) == 0 {
		t.Fatal("overlapping fleet without globalnet accepted")
	}
	for _, e := range errs {
		if !strings.Contains(e.Error(), "spec.globalnet: {cidr: 100.64.0.0/10}") {
			t.Errorf("overlap error does not say how to turn globalnet on: %v", e)
		}
	}
	if errs := ValidateClusterSet(overlapFleet("100.64.0.0/10")); len(errs) != 0 {
		t.Errorf("overlapping fleet with globalnet refused: %v", errs.ToAggregate())
	}
}

func TestValidateGlobalnet(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*ClusterSet)
		want string // substring of the one expected error; "" for none
	}{
		{"pool overlaps a member", func(cs *ClusterSet) { cs.Spec.Globalnet.CIDR = "10.0.0.0/8" }, "spec.globalnet.cidr: Invalid value: \"10.0.0.0/8\": overlaps the member network"},
		{"pool is IPv6", func(cs *ClusterSet) { cs.Spec.Globalnet.CIDR = "fd00::/48" }, "IPv4 only"},
		{"pool host bits", func(cs *ClusterSet) { cs.Spec.Globalnet.CIDR = "100.64.0.1/10" }, "did you mean 100.64.0.0/10"},
		{"pinned wrong size", func(cs *ClusterSet) { cs.Spec.Clusters[0].GlobalPodCIDRs = []string{"100.64.0.0/24"} }, "must be a /16"},
		{"pinned outside pool", func(cs *ClusterSet) { cs.Spec.Clusters[0].GlobalPodCIDRs = []string{"100.200.0.0/16"} }, "outside spec.globalnet.cidr"},
		{"pinned twice", func(cs *ClusterSet) {
			cs.Spec.Clusters[0].GlobalPodCIDRs = []string{"100.64.0.0/16"}
			cs.Spec.Clusters[1].GlobalPodCIDRs = []string{"100.64.0.0/16"}
		}, "overlaps 100.64.0.0/16"},
		{"IPv6 overlap", func(cs *ClusterSet) {
			cs.Spec.Clusters[0].ServiceCIDRs = append(cs.Spec.Clusters[0].ServiceCIDRs, "fd00:96::/108")
			cs.Spec.Clusters[1].ServiceCIDRs = append(cs.Spec.Clusters[1].ServiceCIDRs, "fd00:96::/108")
			cs.Spec.Clusters[0].DNSServiceIPs, cs.Spec.Clusters[1].DNSServiceIPs = nil, nil
			SetDefaults_ClusterSet(cs)
		}, "globalnet remaps IPv4 only"},
		{"overlap inside one cluster", func(cs *ClusterSet) {
			cs.Spec.Clusters[2].ServiceCIDRs = []string{"10.30.128.0/24"}
			cs.Spec.Clusters[2].DNSServiceIPs = []string{"10.30.128.11"}
		}, "must be distinct"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := overlapFleet("100.64.0.0/10")
			tc.edit(cs)
			errs := ValidateClusterSet(cs)
			if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("got %v, want one error containing %q", errs.ToAggregate(), tc.want)
			}
		})
	}
	// Pinned ranges on both overlapping clusters turn globalnet on without a pool.
	cs := overlapFleet("")
	cs.Spec.Clusters[0].GlobalPodCIDRs = []string{"100.64.0.0/16"}
	cs.Spec.Clusters[1].GlobalPodCIDRs = []string{"100.65.0.0/16"}
	if errs := ValidateClusterSet(cs); len(errs) != 0 {
		t.Errorf("pinned global ranges refused: %v", errs.ToAggregate())
	}
}

func TestRemappedClusters(t *testing.T) {
	got := RemappedClusters(overlapFleet("100.64.0.0/10"))
	if want := map[string]bool{"east": true, "west": true}; !maps.Equal(got, want) {
		t.Errorf("remapped %v, want %v (north overlaps nobody)", got, want)
	}
	// A pod CIDR inside another cluster's service CIDR clashes too: both remap.
	cs := overlapFleet("100.64.0.0/10")
	cs.Spec.Clusters[2].PodCIDRs = []string{"10.96.128.0/17"}
	if got := RemappedClusters(cs); !got["north"] {
		t.Errorf("north's pod CIDR inside east's service CIDR: remapped %v", got)
	}
}

func globals(cs *ClusterSet) map[string]string {
	out := map[string]string{}
	for _, c := range cs.Spec.Clusters {
		if len(c.GlobalPodCIDRs) > 0 {
			out[c.Name] = c.GlobalPodCIDRs[0]
		}
	}
	return out
}

// table is the Fleet table of an allocated fleet, as the render would keep it.
func table(cs *ClusterSet) *Fleet {
	f := &Fleet{ObjectMeta: metav1.ObjectMeta{Name: cs.Name}}
	for _, c := range cs.Spec.Clusters {
		f.Spec.Clusters = append(f.Spec.Clusters, FleetMember{Name: c.Name, GlobalPodCIDRs: c.GlobalPodCIDRs, GlobalServiceCIDRs: c.GlobalServiceCIDRs})
	}
	return f
}

func TestAllocateGlobalnet(t *testing.T) {
	cs := overlapFleet("100.64.0.0/13")
	if err := AllocateGlobalnet(cs, nil); err != nil {
		t.Fatal(err)
	}
	first := globals(cs)
	if want := map[string]string{"east": "100.64.0.0/16", "west": "100.66.0.0/16"}; !maps.Equal(first, want) {
		t.Fatalf("allocated %v, want %v (name order, lowest free first, none for north)", first, want)
	}
	if e, w := cs.Spec.Clusters[0].GlobalServiceCIDRs, cs.Spec.Clusters[1].GlobalServiceCIDRs; !slices.Equal(e, []string{"100.65.0.0/16"}) || !slices.Equal(w, []string{"100.67.0.0/16"}) {
		t.Errorf("global service ranges east %v west %v, want 100.65.0.0/16 and 100.67.0.0/16", e, w)
	}
	again := overlapFleet("100.64.0.0/13")
	slices.Reverse(again.Spec.Clusters)
	if err := AllocateGlobalnet(again, nil); err != nil || !maps.Equal(globals(again), first) {
		t.Errorf("file order changed the allocation: %v (%v)", globals(again), err)
	}

	// Adding a cluster that sorts first, with the kept table, moves nobody.
	kept := table(cs)
	grown := overlapFleet("100.64.0.0/13")
	grown.Spec.Clusters = append(grown.Spec.Clusters, ClusterSpec{Name: "alpha", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.97.0.0/16"}})
	SetDefaults_ClusterSet(grown)
	if err := AllocateGlobalnet(grown, kept); err != nil {
		t.Fatal(err)
	}
	g := globals(grown)
	if g["east"] != first["east"] || g["west"] != first["west"] || g["alpha"] != "100.68.0.0/16" {
		t.Errorf("after adding alpha: %v; want east and west unchanged and alpha in the next free block", g)
	}

	// Removing east frees its block; west stays, and a new cluster takes the hole.
	kept = table(grown)
	shrunk := overlapFleet("100.64.0.0/13")
	shrunk.Spec.Clusters = slices.DeleteFunc(shrunk.Spec.Clusters, func(c ClusterSpec) bool { return c.Name == "east" })
	shrunk.Spec.Clusters = append(shrunk.Spec.Clusters, grown.Spec.Clusters[3], ClusterSpec{Name: "zulu", PodCIDRs: []string{"10.244.0.0/16"}, ServiceCIDRs: []string{"10.98.0.0/16"}})
	shrunk.Spec.Broker.Cluster = "west"
	SetDefaults_ClusterSet(shrunk)
	if err := AllocateGlobalnet(shrunk, kept); err != nil {
		t.Fatal(err)
	}
	if g := globals(shrunk); g["west"] != "100.66.0.0/16" || g["alpha"] != "100.68.0.0/16" || g["zulu"] != "100.64.0.0/16" {
		t.Errorf("after removing east and adding zulu: %v", g)
	}

	// Exhaustion names the field and the fix, and changes nothing.
	small := overlapFleet("100.64.0.0/16")
	err := AllocateGlobalnet(small, nil)
	if err == nil || !strings.Contains(err.Error(), "spec.globalnet.cidr") || !strings.Contains(err.Error(), "larger pool") {
		t.Errorf("exhausted pool: %v", err)
	}
	if g := globals(small); len(g) != 0 {
		t.Errorf("exhausted pool left allocations %v", g)
	}
}

func TestMapPrefix(t *testing.T) {
	for _, tc := range []struct{ a, from, to, want string }{
		{"10.244.3.7", "10.244.0.0/16", "100.65.0.0/16", "100.65.3.7"},
		{"10.244.0.1", "10.244.0.0/16", "100.64.0.0/16", "100.64.0.1"},
		{"10.1.2.200", "10.1.2.128/25", "100.64.9.0/25", "100.64.9.72"},
	} {
		got := MapPrefix(netip.MustParseAddr(tc.a), netip.MustParsePrefix(tc.from), netip.MustParsePrefix(tc.to))
		if got.String() != tc.want {
			t.Errorf("MapPrefix(%s, %s, %s) = %s, want %s", tc.a, tc.from, tc.to, got, tc.want)
		}
	}
}
