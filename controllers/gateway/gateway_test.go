package gateway

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
	// Silent long past the dead time, but in the hold of an announced restart.
	held := lost
	held.Lost, held.ConsecutiveLost, held.LossPercent = 5, 5, 100
	held.Silence, held.RestartingUntil = 8*time.Second, now.Add(7*time.Second)
	vx := &dataplane.CableStatus{ClusterID: "west", Driver: dataplane.DriverVXLAN, Endpoint: netip.MustParseAddrPort("198.19.1.10:4789")}
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
		{"announced restart holds connected", connected, ConnInput{Cluster: "west", Endpoint: &ep, Cable: vx, Probe: held}, mcnetv1.Connected,
			"remote gateway restarting (announced); its kernel cable stays up; held until 1970-01-01T00:16:47Z", ""},
		{"announced restart does not make a connection", nil, ConnInput{Cluster: "west", Endpoint: &ep, Cable: vx, Probe: held, ProbeTarget: "10.20.0.1:4801"}, mcnetv1.Connecting,
			"waiting for the first probe reply from 10.20.0.1:4801", ""},
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

// TestConnectionReportsTheCableThatRuns: a remote that prefers VXLAN, reached over the
// WireGuard cable the pair runs, is reported as WireGuard on the remote's port, and a
// connection with no cable configured reports none.
func TestConnectionReportsTheCableThatRuns(t *testing.T) {
	now := time.Unix(1000, 0)
	ep := endpoint("hub", mcnetv1.CableVXLAN, "10.20.0.0/16").Spec
	wg := &dataplane.CableStatus{ClusterID: "hub", Driver: dataplane.DriverWireGuard, Endpoint: netip.MustParseAddrPort("198.19.1.10:51820")}
	got, _ := NextConnection(nil, ConnInput{Cluster: "hub", Endpoint: &ep, Cable: wg}, now)
	if got.Cable != mcnetv1.CableWireGuard || got.Port != 51820 || got.UsingIP != "198.19.1.10" {
		t.Errorf("cable %q port %d via %q, want wireguard 51820 via 198.19.1.10", got.Cable, got.Port, got.UsingIP)
	}
	got, _ = NextConnection(nil, ConnInput{Cluster: "hub", Endpoint: &ep}, now)
	if got.Cable != "" || got.Port != 0 {
		t.Errorf("no cable configured: cable %q port %d, want none", got.Cable, got.Port)
	}
}
