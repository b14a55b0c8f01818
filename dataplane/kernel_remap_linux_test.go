package dataplane

import (
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestKernelRemap connects two clusters with the same pod CIDR (10.1.0.0/16 both, a
// pod at 10.1.0.2 in each) through real namespaces and a VXLAN cable: each reaches the
// other at its global range (a at 100.64.0.0/16, b at 100.65.0.0/16), TCP gets through
// both ways, and the destination sees the sender's global pod address, even with a
// CNI masquerade (iptables) on one gateway and kube-proxy's (nftables) on the other.
// A service address reached at its global twin is still DNATed by kube-proxy's
// chain. Dropping the remap from the State removes its chains.
func TestKernelRemap(t *testing.T) {
	requireRoot(t)
	l := newNamespaces(t, "gwa", "gwb", "poda", "podb")
	l.veth("gwa", "wan0", wanA.String()+"/24", "gwb", "wan0", wanB.String()+"/24")
	pod := netip.MustParseAddr("10.1.0.2")
	for _, side := range []string{"a", "b"} {
		l.veth("gw"+side, "pod0", "10.1.0.1/24", "pod"+side, "eth0", pod.String()+"/24")
		l.ip("pod"+side, "route", "add", "default", "via", "10.1.0.1")
		l.sysctl("gw"+side, "net.ipv4.conf.all.rp_filter", "1")
	}
	real, realSvc := netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.101.0.0/16")
	globalA, globalB := netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("100.65.0.0/16")
	svcA, svcB := netip.MustParsePrefix("100.66.0.0/16"), netip.MustParsePrefix("100.67.0.0/16")
	remote := func(id string, ep netip.Addr, global ...netip.Prefix) Remote {
		return Remote{ClusterID: id, CIDRs: global, Cable: Cable{Driver: DriverVXLAN, Endpoints: []netip.Addr{ep}}}
	}
	local := []netip.Prefix{real, realSvc}
	states := map[string]State{
		"gwa": {ClusterID: "a", LocalCIDRs: local, Remotes: []Remote{remote("b", wanB, globalB, svcB)}, Gateway: &Gateway{},
			Remap: []PrefixMap{{Real: real, Global: globalA}, {Real: realSvc, Global: svcA, Stateless: true}}},
		"gwb": {ClusterID: "b", LocalCIDRs: local, Remotes: []Remote{remote("a", wanA, globalA, svcA)}, Gateway: &Gateway{},
			Remap: []PrefixMap{{Real: real, Global: globalB}, {Real: realSvc, Global: svcB, Stateless: true}}},
	}
	// A's health probe reached b before b's remap chains existed: conntrack holds the
	// flow untranslated, and probes every second would keep it so. The apply drops it.
	stale := []string{"-s", "100.64.0.1", "-d", "100.65.0.1", "-p", "udp", "--sport", "4801", "--dport", "4801"}
	l.exec("gwb", append([]string{"conntrack", "-I", "-t", "120"}, stale...)...)
	for _, role := range []string{"gwa", "gwb"} {
		l.nodes[role] = l.startNode(role)
		if _, err := l.nodes[role].call(helperRequest{Op: "apply", State: states[role]}); err != nil {
			t.Fatal(err)
		}
	}
	if out := l.exec("gwb", append([]string{"conntrack", "-L"}, stale...)...); strings.Contains(out, "100.65.0.1") {
		t.Errorf("the untranslated flow outlived the remap chains:\n%s", out)
	}
	masq := []string{"POSTROUTING", "-s", "10.1.0.0/16", "-j", "MASQUERADE"}
	l.exec("gwa", append([]string{"iptables", "-t", "nat", "-A"}, masq...)...)
	l.exec("gwb", "nft", "add table ip kube-proxy-test { chain nat-postrouting { type nat hook postrouting priority srcnat; masquerade; }; }")

	globalPodA := netip.MustParseAddr("100.64.0.2")
	globalPodB := netip.MustParseAddr("100.65.0.2")
	l.waitPing("poda", globalPodB.String())
	l.checkRemappedTCP("podb", "poda", globalPodB, globalPodA)
	l.checkRemappedTCP("poda", "podb", globalPodA, globalPodB)
	// The health-check address of a gateway node (here its pod0 address) is reached
	// the same way.
	l.waitPing("podb", "100.64.0.1")

	// A ClusterIP of b, 10.101.0.10, DNATed to b's pod by a stand-in for kube-proxy
	// (nftables, priority dstnat): a reaches it at its global twin 100.67.0.10, the
	// DNAT still applies, and the pod sees a's global pod address.
	l.exec("gwb", "nft", "add table ip kube-proxy-svc { chain pre { type nat hook prerouting priority dstnat; ip daddr 10.101.0.10 dnat to 10.1.0.2; }; }")
	l.checkRemappedTCP("podb", "poda", netip.MustParseAddr("100.67.0.10"), globalPodA)

	for _, role := range []string{"gwa", "gwb"} {
		if d := l.nftDump(role); !strings.Contains(d, "chain remap-in") || !strings.Contains(d, "chain remap-svc-out") {
			t.Fatalf("%s: no remap chains:\n%s", role, d)
		}
	}
	// What the kernel translates reads back as the State's maps; a rule deleted by
	// hand (drift) takes its map out of the read-back.
	rep, err := l.nodes["gwb"].call(helperRequest{Op: "remap"})
	if err != nil {
		t.Fatal(err)
	}
	if want := states["gwb"].Remap; !slices.Equal(want, rep.Remap) {
		t.Errorf("remap read back from the kernel: %v, want %v", rep.Remap, want)
	}
	l.exec("gwb", "nft", "flush chain inet mcnet remap-svc-in")
	if rep, err = l.nodes["gwb"].call(helperRequest{Op: "remap"}); err != nil {
		t.Fatal(err)
	}
	if want := states["gwb"].Remap[:1]; !slices.Equal(want, rep.Remap) {
		t.Errorf("remap read back after flushing remap-svc-in: %v, want %v", rep.Remap, want)
	}

	s := states["gwa"]
	s.Remap = nil
	if _, err := l.nodes["gwa"].call(helperRequest{Op: "apply", State: s}); err != nil {
		t.Fatal(err)
	}
	if d := l.nftDump("gwa"); strings.Contains(d, "remap") {
		t.Errorf("remap chains left after the State dropped the remap:\n%s", d)
	}
}

// checkRemappedTCP connects from client to server's address dial and checks that the
// server saw the connection come from want.
func (l *lab) checkRemappedTCP(server, client string, dial, want netip.Addr) {
	l.tb.Helper()
	var ln net.Listener
	l.inNS(server, func() {
		var err error
		if ln, err = net.Listen("tcp4", "0.0.0.0:0"); err != nil {
			l.tb.Fatal(err)
		}
	})
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	seen := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			seen <- err.Error()
			return
		}
		defer c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap().String()
		io.WriteString(c, "ok")
	}()
	var c net.Conn
	l.inNS(client, func() {
		var err error
		if c, err = net.DialTimeout("tcp4", netip.AddrPortFrom(dial, uint16(port)).String(), 10*time.Second); err != nil {
			l.tb.Fatalf("%s -> %s: %v\n%s", client, dial, err, l.nftDump("gw"+server[len(server)-1:]))
		}
	})
	defer c.Close()
	b, _ := io.ReadAll(c)
	if got := <-seen; got != want.String() || string(b) != "ok" {
		l.tb.Errorf("TCP %s -> %s: server saw source %s (reply %q), want %s", client, dial, got, b, want)
	}
}
