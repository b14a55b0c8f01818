package cidr

import (
	"net/netip"
	"testing"
)

func TestNthAndLast(t *testing.T) {
	for _, tc := range []struct {
		prefix    string
		n         int
		nth, last string
	}{
		{"10.96.0.0/12", 53, "10.96.0.53", "10.111.255.255"},
		{"10.20.1.0/24", 1, "10.20.1.1", "10.20.1.255"},
		{"10.20.1.7/24", 0, "10.20.1.0", "10.20.1.255"},
		{"fd00:120::/108", 53, "fd00:120::35", "fd00:120::f:ffff"},
		{"10.0.0.0/30", 5, "10.0.0.5", "10.0.0.3"},
	} {
		p := netip.MustParsePrefix(tc.prefix)
		if got := Nth(p, tc.n); got != netip.MustParseAddr(tc.nth) {
			t.Errorf("Nth(%s, %d) = %s, want %s", p, tc.n, got, tc.nth)
		}
		if got := Last(p); got != netip.MustParseAddr(tc.last) {
			t.Errorf("Last(%s) = %s, want %s", p, got, tc.last)
		}
	}
}
