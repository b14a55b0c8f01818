package gateway

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
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

func TestBuildState(t *testing.T) {
	key, _ := dataplane.ParseKey(keyB64)
	local := Local{ClusterID: "east", Cable: mcnetv1.CableVXLAN, CablePort: 4789, CIDRs: []netip.Prefix{netip.MustParsePrefix("10.10.0.0/16")}}
	unlabelled := endpoint("rogue", mcnetv1.CableVXLAN, "10.50.0.0/16")
	unlabelled.Labels = nil
	overlapping := endpoint("dup", mcnetv1.CableVXLAN, "10.10.5.0/24")
	eps := []mcnetv1.Endpoint{
		endpoint("west", mcnetv1.CableWireGuard, "10.20.0.0/16", "10.21.0.0/16"),
		endpoint("north", mcnetv1.CableVXLAN, "10.30.0.0/16"),
		endpoint("east", mcnetv1.CableVXLAN, "10.10.0.0/16"), // the local one
		unlabelled, overlapping,
	}
	gw := GatewayPorts(local, []netip.Addr{netip.MustParseAddr("10.10.0.1")})
	got, bad := BuildState(local, eps, gw, netip.Addr{})
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
	if _, ok := bad["dup"]; !ok || len(bad) != 1 {
		t.Errorf("bad remotes: got %v, want only dup (overlaps the local CIDR)", bad)
	}

	// A node that is not the gateway routes to the active one.
	gwIP := netip.MustParseAddr("198.18.0.11")
	got, _ = BuildState(local, eps, nil, gwIP)
	if got.Gateway != nil || got.ActiveGateway != gwIP || len(got.Remotes) != 2 {
		t.Errorf("non-gateway state: %+v", got)
	}
}

func TestSummarise(t *testing.T) {
	ms := time.Millisecond
	at := time.Unix(100, 0)
	got := Summarise([]ProbeResult{
		{Sent: at, RTT: 2 * ms}, {Sent: at.Add(time.Second), Lost: true},
		{Sent: at.Add(2 * time.Second), RTT: 4 * ms}, {Sent: at.Add(3 * time.Second), Lost: true},
	})
	want := ProbeStats{Sent: 4, Lost: 2, LossPercent: 50, Last: 4 * ms, Min: 2 * ms, Avg: 3 * ms, Max: 4 * ms, StdDev: ms,
		ConsecutiveLost: 1, LastReply: at.Add(2 * time.Second)}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(ProbeStats{}, Summarise(nil)); diff != "" {
		t.Errorf("empty (-want +got):\n%s", diff)
	}
}

func TestNextConnection(t *testing.T) {
	now := time.Unix(1000, 0)
	ep := endpoint("west", mcnetv1.CableWireGuard, "10.20.0.0/16").Spec
	noHC := ep
	noHC.HealthCheckIPs = nil
	wg := &dataplane.CableStatus{ClusterID: "west", Driver: dataplane.DriverWireGuard, Endpoint: netip.MustParseAddrPort("198.19.1.10:51820")}
	shook := *wg
	shook.LastHandshake = now.Add(-10 * time.Second)
	ok := ProbeStats{Sent: 3, Last: time.Millisecond, Min: time.Millisecond, Avg: time.Millisecond, Max: time.Millisecond}
	lost := ProbeStats{Sent: 5, Lost: 3, LossPercent: 60, ConsecutiveLost: 3, Silence: 3100 * time.Millisecond, DeadAfter: 3 * time.Second}
	// Three lost in a row but not yet silent for long enough: a restarting remote.
	quiet := ProbeStats{Sent: 5, Lost: 3, LossPercent: 60, ConsecutiveLost: 3, Silence: 2 * time.Second, DeadAfter: 3 * time.Second}
	few := ProbeStats{Sent: 1, Lost: 1, ConsecutiveLost: 1}
	connected := &mcnetv1.Connection{Cluster: "west", Endpoint: &ep, Status: mcnetv1.Connected}
	for _, tc := range []struct {
		name       string
		prev       *mcnetv1.Connection
		in         ConnInput
		wantStatus mcnetv1.ConnectionStatus
		wantMsg    string
		wantEvent  string
	}{
		{"endpoint missing", nil, ConnInput{Cluster: "west"}, mcnetv1.ConnectionError, "endpoint missing: cluster west publishes no active gateway", ReasonConnectionFailed},
		{"endpoint unusable", nil, ConnInput{Cluster: "west", Endpoint: &ep, EndpointErr: errors.New("no subnets")}, mcnetv1.ConnectionError, "endpoint unusable: no subnets", ReasonConnectionFailed},
		{"no health-check IP", nil, ConnInput{Cluster: "west", Endpoint: &noHC, Probe: ok}, mcnetv1.ConnectionError, "remote gateway publishes no health-check IP, so the datapath cannot be verified", ReasonConnectionFailed},
		{"first probes pass", nil, ConnInput{Cluster: "west", Endpoint: &ep, Cable: &shook, Probe: ok}, mcnetv1.Connected, "", ReasonConnected},
		{"waiting", nil, ConnInput{Cluster: "west", Endpoint: &ep, Cable: wg, Probe: few, ProbeTarget: "10.20.0.1:4801"}, mcnetv1.Connecting, "waiting for the first probe reply from 10.20.0.1:4801", ""},
		{"one lost probe keeps connected", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: &shook, Probe: few}, mcnetv1.Connected, "", ""},
		{"no handshake", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: wg, Probe: lost, ProbeTarget: "10.20.0.1:4801"}, mcnetv1.ConnectionError,
			"no WireGuard handshake with 198.19.1.10 yet (is UDP 51820 reachable?); no probe replies from 10.20.0.1:4801 for 3s", ReasonConnectionFailed},
		{"handshake but no replies", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: &shook, Probe: lost, ProbeTarget: "10.20.0.1:4801"}, mcnetv1.ConnectionError,
			"WireGuard handshake with 198.19.1.10 is recent but no probe replies from 10.20.0.1:4801 for 3s (routes or packet filter inside the remote cluster?)", ReasonConnectionFailed},
		{"lost probes within the dead time keep connected", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: &shook, Probe: quiet}, mcnetv1.Connected, "", ""},
		{"restart keeps status", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: wg}, mcnetv1.Connected, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ev := NextConnection(tc.prev, tc.in, now)
			if got.Status != tc.wantStatus || got.Message != tc.wantMsg {
				t.Errorf("got %s %q, want %s %q", got.Status, got.Message, tc.wantStatus, tc.wantMsg)
			}
			gotReason := ""
			if ev != nil {
				gotReason = ev.Reason
			}
			if gotReason != tc.wantEvent {
				t.Errorf("event %q, want %q", gotReason, tc.wantEvent)
			}
			if tc.prev != nil && tc.prev.Status == got.Status && got.LastTransitionTime != tc.prev.LastTransitionTime {
				t.Errorf("transition time moved without a transition")
			}
		})
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
