package diagnose

import (
	"net/netip"
	"testing"
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
