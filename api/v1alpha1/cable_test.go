package v1alpha1

import "testing"

func TestPairDriver(t *testing.T) {
	for _, tc := range []struct{ a, b, want CableDriver }{
		{CableVXLAN, CableVXLAN, CableVXLAN},
		{CableVXLAN, CableWireGuard, CableWireGuard},
		{CableWireGuard, CableVXLAN, CableWireGuard},
		{CableWireGuard, CableWireGuard, CableWireGuard},
	} {
		if got := PairDriver(tc.a, tc.b); got != tc.want || PairDriver(tc.b, tc.a) != got {
			t.Errorf("PairDriver(%s, %s) = %s, want %s both ways", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestCableTo(t *testing.T) {
	for _, tc := range []struct {
		local    CableDriver
		remote   EndpointSpec
		driver   CableDriver
		wantPort int32
	}{
		{CableVXLAN, EndpointSpec{Cable: CableVXLAN, Port: 4790}, CableVXLAN, 4790},
		// The remote prefers VXLAN but this pair uses WireGuard: its default port.
		{CableWireGuard, EndpointSpec{Cable: CableVXLAN, Port: 4789}, CableWireGuard, 0},
		{CableVXLAN, EndpointSpec{Cable: CableWireGuard, Port: 51821}, CableWireGuard, 51821},
		{CableWireGuard, EndpointSpec{Cable: CableWireGuard}, CableWireGuard, 0},
	} {
		d, p := CableTo(tc.local, &tc.remote)
		if d != tc.driver || p != tc.wantPort {
			t.Errorf("CableTo(%s, %s:%d) = %s:%d, want %s:%d", tc.local, tc.remote.Cable, tc.remote.Port, d, p, tc.driver, tc.wantPort)
		}
	}
}
