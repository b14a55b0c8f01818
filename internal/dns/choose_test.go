package dns

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

func TestChoose(t *testing.T) {
	ready := func(c, a string) Backend {
		return Backend{Cluster: c, Endpoints: []Endpoint{{Addrs: addrs(a), Ready: true}}}
	}
	notReady := func(c, a string) Backend {
		return Backend{Cluster: c, Endpoints: []Endpoint{{Addrs: addrs(a)}}}
	}
	up := func(rtt time.Duration) Health { return Health{Connected: true, RTT: rtt} }
	tests := []struct {
		name     string
		backends []Backend
		health   map[string]Health
		fam      int
		// want maps r (the random draw) to the chosen cluster ("" for none).
		want map[float64]string
	}{
		{
			name:     "local with ready endpoints wins whatever the RTTs",
			backends: []Backend{ready("east", "10.1.0.1"), ready("hub", "10.0.0.1")},
			health:   map[string]Health{"east": up(time.Microsecond)},
			fam:      4,
			want:     map[float64]string{0: "hub", 0.99: "hub"},
		},
		{
			name:     "local not ready: remote by 1/RTT (east 1 ms = 3/4, west 3 ms = 1/4)",
			backends: []Backend{ready("east", "10.1.0.1"), notReady("hub", "10.0.0.1"), ready("west", "10.2.0.1")},
			health:   map[string]Health{"east": up(time.Millisecond), "west": up(3 * time.Millisecond)},
			fam:      4,
			want:     map[float64]string{0: "east", 0.74: "east", 0.76: "west", 0.999: "west"},
		},
		{
			name:     "disconnected clusters never answer",
			backends: []Backend{ready("east", "10.1.0.1"), ready("west", "10.2.0.1")},
			health:   map[string]Health{"east": {Connected: false, RTT: time.Microsecond}, "west": up(time.Second)},
			fam:      4,
			want:     map[float64]string{0: "west", 0.5: "west", 0.99: "west"},
		},
		{
			name:     "clusters without a health entry are unhealthy",
			backends: []Backend{ready("east", "10.1.0.1")},
			fam:      4,
			want:     map[float64]string{0: "", 0.5: ""},
		},
		{
			name:     "not-ready remote clusters never answer",
			backends: []Backend{notReady("east", "10.1.0.1"), ready("west", "10.2.0.1")},
			health:   map[string]Health{"east": up(time.Millisecond), "west": up(9 * time.Millisecond)},
			fam:      4,
			want:     map[float64]string{0: "west", 0.99: "west"},
		},
		{
			name:     "unmeasured RTT weighs as the slowest measured",
			backends: []Backend{ready("east", "10.1.0.1"), ready("west", "10.2.0.1"), ready("north", "10.3.0.1")},
			health:   map[string]Health{"east": up(time.Millisecond), "west": up(2 * time.Millisecond), "north": {Connected: true}},
			fam:      4,
			// weights 1000, 500, 500
			want: map[float64]string{0.49: "east", 0.51: "west", 0.74: "west", 0.76: "north"},
		},
		{
			name:     "RTTs under 100µs count as equal",
			backends: []Backend{ready("east", "10.1.0.1"), ready("west", "10.2.0.1")},
			health:   map[string]Health{"east": up(time.Nanosecond), "west": up(50 * time.Microsecond)},
			fam:      4,
			want:     map[float64]string{0.49: "east", 0.51: "west"},
		},
		{
			name:     "only clusters with addresses of the family",
			backends: []Backend{ready("hub", "10.0.0.1"), ready("east", "fd00::1")},
			health:   map[string]Health{"east": up(10 * time.Millisecond)},
			fam:      6,
			want:     map[float64]string{0: "east", 0.99: "east"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := map[float64]string{}
			for r := range tt.want {
				if b := choose(tt.backends, "hub", tt.health, tt.fam, r); b != nil {
					got[r] = b.Cluster
				} else {
					got[r] = ""
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("choice by random draw (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDashed(t *testing.T) {
	for in, want := range map[string]string{"fd00::1": "fd00--1", "10.1.2.3": "10-1-2-3", "::ffff:10.1.2.3": "10-1-2-3"} {
		if got := dashed(netip.MustParseAddr(in)); got != want {
			t.Errorf("dashed(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestHealthFrom(t *testing.T) {
	rtt := func(avg, last time.Duration) *mcnetv1.RTTStats {
		return &mcnetv1.RTTStats{Avg: metav1.Duration{Duration: avg}, Last: metav1.Duration{Duration: last}}
	}
	gws := []mcnetv1.Gateway{
		{Status: mcnetv1.GatewayStatus{HAStatus: mcnetv1.HAPassive, Connections: []mcnetv1.Connection{
			{Cluster: "south", Status: mcnetv1.Connected, RTT: rtt(time.Millisecond, 0)}, // a standby's view does not count
		}}},
		{Status: mcnetv1.GatewayStatus{HAStatus: mcnetv1.HAActive, Connections: []mcnetv1.Connection{
			{Cluster: "east", Status: mcnetv1.Connected, RTT: rtt(2*time.Millisecond, 5*time.Millisecond)},
			{Cluster: "west", Status: mcnetv1.Connected, RTT: rtt(0, 7*time.Millisecond)},
			{Cluster: "north", Status: mcnetv1.Connected},
			{Cluster: "down", Status: mcnetv1.ConnectionError, RTT: rtt(time.Millisecond, 0)},
			{Cluster: "new", Status: mcnetv1.Connecting},
		}}},
	}
	want := map[string]Health{
		"east":  {Connected: true, RTT: 2 * time.Millisecond},
		"west":  {Connected: true, RTT: 7 * time.Millisecond},
		"north": {Connected: true},
	}
	if diff := cmp.Diff(want, HealthFrom(gws, time.Now())); diff != "" {
		t.Errorf("health (-want +got):\n%s", diff)
	}
}
