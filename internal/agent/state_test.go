package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
	"github.com/mcnet-io/mcnet/internal/membership"
)

const keyB64 = "FhzLAapFunc3t/pM0ytD9Tg9M8H2IpsaR6dEy34m9Wo="

func endpoint(cluster string, cable mcnetv1.CableDriver, subnets ...string) mcnetv1.Endpoint {
	return mcnetv1.Endpoint{
		ObjectMeta: metav1.ObjectMeta{Name: cluster, Labels: map[string]string{mcnetv1.ClusterLabel: cluster}},
		Spec: mcnetv1.EndpointSpec{
			ClusterID: cluster, Hostname: cluster + "-gw1", Cable: cable, Port: mcnetv1.DefaultCablePort(cable),
			PrivateIPs: []string{"198.18.100.10"}, PublicIPs: []string{"198.19.1.10"},
			PublicKey: keyB64, HealthCheckIPs: []string{"10.20.0.1"}, Subnets: subnets,
		},
	}
}

// testTable is the fleet table of the state tests: east is local; west prefers
// WireGuard, north VXLAN; dup is a member whose Endpoint claims east's network.
func testTable(t *testing.T) *membership.Table {
	t.Helper()
	member := func(name string, cable mcnetv1.CableDriver, pod, svc string) mcnetv1.FleetMember {
		return mcnetv1.FleetMember{Name: name, Cable: cable, CablePort: mcnetv1.DefaultCablePort(cable), PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}}
	}
	tab, err := membership.New(&mcnetv1.Fleet{ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: mcnetv1.FleetSpec{Clusters: []mcnetv1.FleetMember{
		member("east", mcnetv1.CableVXLAN, "10.10.0.0/16", "10.110.0.0/16"),
		member("west", mcnetv1.CableWireGuard, "10.20.0.0/16", "10.21.0.0/16"),
		member("north", mcnetv1.CableVXLAN, "10.30.0.0/16", "10.130.0.0/16"),
		member("dup", mcnetv1.CableVXLAN, "10.40.0.0/16", "10.140.0.0/16"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestBuildState(t *testing.T) {
	key, _ := dataplane.ParseKey(keyB64)
	local := Local{ClusterID: "east", Fleet: "prod", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}}
	unlabelled := endpoint("rogue", mcnetv1.CableVXLAN, "10.50.0.0/16")
	unlabelled.Labels = nil
	overlapping := endpoint("dup", mcnetv1.CableVXLAN, "10.10.5.0/24")
	eps := []mcnetv1.Endpoint{
		endpoint("west", mcnetv1.CableWireGuard, "10.20.0.0/16", "10.21.0.0/16"),
		endpoint("north", mcnetv1.CableVXLAN, "10.30.0.0/16"),
		endpoint("east", mcnetv1.CableVXLAN, "10.10.0.0/16"), // the local one
		unlabelled, overlapping,
	}
	gw := GatewayPorts(local, []netip.Addr{netip.MustParseAddr("10.10.0.1")}, nil)
	got, bad, rejected := BuildState(local, testTable(t), eps, gw, netip.Addr{})
	want := dataplane.State{
		ClusterID: "east", LocalCIDRs: local.CIDRs, Gateway: &dataplane.Gateway{VXLANPort: 4789, HealthCheckIPs: []netip.Addr{netip.MustParseAddr("10.10.0.1")}},
		Remotes: []dataplane.Remote{
			{ClusterID: "north", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16")}, Cable: dataplane.Cable{
				Driver: dataplane.DriverVXLAN, Port: 4789, PublicKey: key,
				Endpoints: []netip.Addr{netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.18.100.10")}}},
			// The pair uses WireGuard because west asks for it; west listens on its port.
			{ClusterID: "west", CIDRs: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("10.21.0.0/16")}, Cable: dataplane.Cable{
				Driver: dataplane.DriverWireGuard, Port: 51820, PublicKey: key,
				Endpoints: []netip.Addr{netip.MustParseAddr("198.19.1.10"), netip.MustParseAddr("198.18.100.10")}}},
		},
	}
	// north's key is parsed too only when the pair is WireGuard.
	want.Remotes[0].Cable.PublicKey = dataplane.Key{}
	if diff := cmp.Diff(want, got, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}
	// dup claims east's network, outside its own allocation: nothing of it is left.
	if _, ok := bad["dup"]; !ok || len(bad) != 1 {
		t.Errorf("bad remotes: got %v, want only dup (publishes nothing inside its allocation)", bad)
	}
	if s := membership.Summary(rejected, 10); !strings.Contains(s, "cluster dup: Endpoint dup spec.subnets[0] 10.10.5.0/24: outside its allocation") {
		t.Errorf("rejections do not name dup's subnet: %s", s)
	}

	// A node that is not the gateway routes to the active one.
	gwIP := netip.MustParseAddr("198.18.0.11")
	got, _, _ = BuildState(local, testTable(t), eps, nil, gwIP)
	if got.Gateway != nil || got.ActiveGateway != gwIP || len(got.Remotes) != 2 {
		t.Errorf("non-gateway state: %+v", got)
	}
}

// TestBuildStateTrustsOnlyTheTable plays a hostile member and an outsider: whatever
// they publish, every node routes to a member only what the fleet table allocates to
// it, and reports the rest by cluster.
func TestBuildStateTrustsOnlyTheTable(t *testing.T) {
	local := Local{ClusterID: "east", Fleet: "prod", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}}
	hostile := endpoint("west", mcnetv1.CableWireGuard,
		"10.20.0.0/16",
		"::/0", "0.0.0.0/0", // everything
		"169.254.169.254/32", // the cloud metadata service
		"10.10.0.0/16",       // the local cluster's pods
		"10.30.0.0/16",       // another member's pods
		"198.18.100.10/32",   // a peer gateway's address
		"10.20.7.0/24",       // inside its own, already covered
	)
	for i := range 5000 { // a flood of /32s of its own range
		hostile.Spec.Subnets = append(hostile.Spec.Subnets, netip.AddrFrom4([4]byte{10, 21, byte(i >> 8), byte(i)}).String()+"/32")
	}
	hostile.Spec.Port, hostile.Spec.Cable = 22, mcnetv1.CableVXLAN // lies about its cable
	hostile.Spec.PublicIPs = []string{"10.30.0.5"}                 // a gateway inside north's pods
	outsider := endpoint("evil", mcnetv1.CableVXLAN, "10.66.0.0/16")
	eps := []mcnetv1.Endpoint{hostile, outsider, endpoint("north", mcnetv1.CableVXLAN, "10.30.0.0/16")}

	got, bad, rejected := BuildState(local, testTable(t), eps, nil, netip.MustParseAddr("198.18.0.11"))
	if len(bad) != 0 {
		t.Errorf("members left out: %v", bad)
	}
	routed := map[string][]string{}
	for _, r := range got.Remotes {
		for _, p := range r.CIDRs {
			routed[r.ClusterID] = append(routed[r.ClusterID], p.String())
		}
		if r.ClusterID == "west" {
			// The table's driver and port, the gateway address outside the fleet.
			if r.Cable.Driver != dataplane.DriverWireGuard || r.Cable.Port != 51820 || len(r.Cable.Endpoints) != 1 || r.Cable.Endpoints[0] != netip.MustParseAddr("198.18.100.10") {
				t.Errorf("west's cable: %+v", r.Cable)
			}
		}
	}
	wantRouted := map[string][]string{
		// 10.20.0.0/16 and at most MaxSubnets-1 of the flood: all inside its own.
		"west":  append([]string{"10.20.0.0/16"}, "10.21.0.0/32", "10.21.0.1/32", "10.21.0.2/32", "10.21.0.3/32", "10.21.0.4/32", "10.21.0.5/32", "10.21.0.6/32"),
		"north": {"10.30.0.0/16"},
	}
	if diff := cmp.Diff(wantRouted, routed); diff != "" {
		t.Errorf("routed (-want +got):\n%s", diff)
	}
	for _, r := range got.Remotes {
		m, _ := testTable(t).Member(r.ClusterID)
		for _, p := range r.CIDRs {
			if !m.Contains(p) {
				t.Errorf("%s: %s routed outside its allocation", r.ClusterID, p)
			}
		}
	}
	summary := membership.Summary(rejected, 100)
	for _, want := range []string{
		`cluster evil: Endpoint evil: cluster "evil" is not a member of fleet prod`,
		"cluster west: Endpoint west spec.subnets[1] ::/0: outside its allocation (10.20.0.0/16, 10.21.0.0/16)",
		"spec.subnets[3] 169.254.169.254/32: outside its allocation",
		"spec.subnets[4] 10.10.0.0/16: outside its allocation",
		"spec.subnets[5] 10.30.0.0/16: outside its allocation",
		"spec.subnets[6] 198.18.100.10/32: outside its allocation",
		"spec.subnets[7] 10.20.7.0/24: already covered",
		"more than 8 subnets",
		"5008 entries; only the first 64 are read",
		"spec.publicIPs[0] 10.30.0.5: a gateway address inside the fleet's networks",
		"spec.cable/port vxlan:22: the fleet table says wireguard:51820",
	} {
		if !strings.Contains(summary, want) {
			t.Errorf("rejections lack %q:\n%s", want, summary)
		}
	}

	// Without the table nobody is trusted.
	got, _, rejected = BuildState(local, membership.Empty("prod"), eps, nil, netip.MustParseAddr("198.18.0.11"))
	if len(got.Remotes) != 0 || len(rejected) != 3 {
		t.Errorf("without the table: %d remotes, %d rejections", len(got.Remotes), len(rejected))
	}
}

func TestLocalEndpointAndAddresses(t *testing.T) {
	key, _ := dataplane.ParseKey(keyB64)
	l := Local{ClusterID: "east", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16"), netip.MustParsePrefix("10.11.0.0/16")}}
	got := LocalEndpoint(l, "east-gw1", NodeAddrs{
		Private: []netip.Addr{netip.MustParseAddr("198.18.100.10")}, Public: []netip.Addr{netip.MustParseAddr("198.19.1.10")},
		HealthCheck: []netip.Addr{netip.MustParseAddr("10.10.0.1")},
	}, key)
	want := mcnetv1.EndpointSpec{
		ClusterID: "east", Hostname: "east-gw1", Cable: mcnetv1.CableVXLAN, Port: 4789, PublicKey: keyB64,
		PrivateIPs: []string{"198.18.100.10"}, PublicIPs: []string{"198.19.1.10"}, HealthCheckIPs: []string{"10.10.0.1"},
		Subnets: []string{"10.10.0.0/16", "10.11.0.0/16"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("endpoint (-want +got):\n%s", diff)
	}
}

func TestClusterNodeAddrs(t *testing.T) {
	node := func(addrs ...corev1.NodeAddress) corev1.Node {
		return corev1.Node{Status: corev1.NodeStatus{Addresses: addrs}}
	}
	nodes := []corev1.Node{
		node(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.1.11"}, corev1.NodeAddress{Type: corev1.NodeHostName, Address: "gw1"},
			corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.7"}),
		node(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.1.10"}, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "fd00::a"},
			corev1.NodeAddress{Type: corev1.NodeInternalDNS, Address: "worker.local"}),
		// The same address twice (a node listed under both types), and one that does
		// not parse: kept once, and left out.
		node(corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "198.18.1.10"}, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "not-an-ip"}),
		node(),
	}
	want := []netip.Addr{netip.MustParseAddr("198.18.1.10"), netip.MustParseAddr("198.18.1.11"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("fd00::a")}
	if d := cmp.Diff(want, ClusterNodeAddrs(nodes), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); d != "" {
		t.Errorf("ClusterNodeAddrs (-want +got):\n%s", d)
	}
}
