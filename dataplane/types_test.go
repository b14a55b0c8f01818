package dataplane

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestStateValidate(t *testing.T) {
	ep := []netip.Addr{netip.MustParseAddr("198.18.0.2")}
	good := State{
		ClusterID: "a", LocalCIDRs: prefixes("10.1.0.0/16"), Gateway: &Gateway{},
		Remotes: []Remote{{ClusterID: "b", CIDRs: prefixes("10.2.0.0/16"), Cable: Cable{Driver: DriverVXLAN, Endpoints: ep}}},
	}
	for _, tc := range []struct {
		name  string
		edit  func(*State)
		wants []string // substrings of the error; none means valid
	}{
		{"valid", func(*State) {}, nil},
		{"non-gateway needs no endpoints", func(s *State) { s.Gateway = nil; s.Remotes[0].Cable.Endpoints = nil }, nil},
		{"every problem at once", func(s *State) {
			s.Remotes[0].CIDRs = prefixes("10.1.0.0/24", "198.18.0.0/24")
			s.Remotes[0].Cable.Driver = "ipsec"
			s.Remotes = append(s.Remotes, Remote{ClusterID: "b", Cable: Cable{Driver: DriverWireGuard}})
		}, []string{"overlaps local", "contains its endpoint", `unknown cable driver "ipsec"`, "duplicate cluster ID", "no endpoints", "without public key"}},
		{"unmasked prefix", func(s *State) { s.LocalCIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.2.3/16")} }, []string{"not a masked prefix"}},
		{"vxlan port differs", func(s *State) { s.Remotes[0].Cable.Port = 4800 }, []string{"one port fleet-wide"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Remotes = append([]Remote(nil), good.Remotes...)
			tc.edit(&s)
			err := s.Validate()
			if len(tc.wants) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidState) {
				t.Fatalf("Validate() = %v, want ErrInvalidState", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestKeyText(t *testing.T) {
	const s = "FhzLAapFunc3t/pM0ytD9Tg9M8H2IpsaR6dEy34m9Wo="
	k, err := ParseKey(s)
	if err != nil || k.String() != s || k.IsZero() {
		t.Fatalf("ParseKey(%q) = %s, %v", s, k, err)
	}
	var back Key
	b, _ := k.MarshalText()
	if err := back.UnmarshalText(b); err != nil || back != k {
		t.Errorf("text round trip = %s, %v", back, err)
	}
	if _, err := ParseKey("c2hvcnQ="); err == nil {
		t.Error("ParseKey accepted a short key")
	}
}

func TestTunnelMTU(t *testing.T) {
	for _, tc := range []struct {
		d    Driver
		v6   bool
		want int
	}{{DriverVXLAN, false, 1450}, {DriverVXLAN, true, 1430}, {DriverWireGuard, false, 1420}, {DriverWireGuard, true, 1420}} {
		if got := 1500 - tc.d.Overhead(tc.v6); got != tc.want {
			t.Errorf("%s v6=%v: MTU %d, want %d", tc.d, tc.v6, got, tc.want)
		}
	}
}

func TestMACs(t *testing.T) {
	a, b := clusterMAC("a"), clusterMAC("b")
	for _, m := range [][6]byte{a, b, gatewayMAC("a"), nodeMAC("a")} {
		if m[0]&0x01 != 0 || m[0]&0x02 == 0 {
			t.Errorf("%s: want unicast, locally administered", macString(m))
		}
	}
	if a == b || gatewayMAC("a") == nodeMAC("a") {
		t.Error("derived MACs collide")
	}
}

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}
