package diagnose

import (
	"net/netip"
	"testing"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

func TestBrokerAddr(t *testing.T) {
	for _, tc := range []struct {
		server string
		want   netip.AddrPort
		err    bool
	}{
		{"https://198.19.1.1:6443", netip.MustParseAddrPort("198.19.1.1:6443"), false},
		{"https://[fd00::1]:6443", netip.MustParseAddrPort("[fd00::1]:6443"), false},
		{"https://10.0.0.1", netip.MustParseAddrPort("10.0.0.1:443"), false},
		{"https://hub.example.com:6443", netip.AddrPort{}, true},
		{"", netip.AddrPort{}, true},
	} {
		got, err := brokerAddr(tc.server)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("brokerAddr(%q) = %v, %v; want %v, error %v", tc.server, got, err, tc.want, tc.err)
		}
	}
}

func TestCableOf(t *testing.T) {
	ep := func(d mcnetv1.CableDriver, port int32) *mcnetv1.Endpoint {
		return &mcnetv1.Endpoint{Spec: mcnetv1.EndpointSpec{Cable: d, Port: port}}
	}
	for _, tc := range []struct {
		local    mcnetv1.CableDriver
		remote   *mcnetv1.Endpoint
		driver   mcnetv1.CableDriver
		wantPort int32
	}{
		{mcnetv1.CableVXLAN, ep(mcnetv1.CableVXLAN, 4790), mcnetv1.CableVXLAN, 4790},
		{mcnetv1.CableWireGuard, ep(mcnetv1.CableVXLAN, 4789), mcnetv1.CableWireGuard, 51820},
		{mcnetv1.CableVXLAN, ep(mcnetv1.CableWireGuard, 51821), mcnetv1.CableWireGuard, 51821},
	} {
		d, p := cableOf(tc.local, tc.remote)
		if d != tc.driver || p != tc.wantPort {
			t.Errorf("cableOf(%s, %s:%d) = %s:%d, want %s:%d", tc.local, tc.remote.Spec.Cable, tc.remote.Spec.Port, d, p, tc.driver, tc.wantPort)
		}
	}
}
