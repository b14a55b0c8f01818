package dataplane

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestKernelFilter checks what mcnet's nftables table does to real packets: VXLAN
// frames reach the cluster only from the remote gateway; a masquerade by the CNI
// (iptables) or kube-proxy (nftables) does not hide a pod's address from the remote
// cluster; and a drop rule standing in for a NetworkPolicy still applies to traffic
// from the remote cluster, because mcnet accepts nothing ahead of it; and a host
// whose FORWARD policy drops must allow the cluster CIDRs itself, as documented.
func TestKernelFilter(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	// A host on the WAN that is not a gateway of any cluster.
	l.ns["evil"] = "mcnt-" + l.id + "-evil"
	l.run("ip", "netns", "add", l.ns["evil"])
	l.veth("gwa", "wan1", "198.18.2.1/24", "evil", "wan0", "198.18.2.2/24")
	l.startNodes()
	l.applyAll(DriverVXLAN)
	l.waitPing("poda", podB.String())

	t.Run("VXLANOnlyFromRemoteGateways", func(t *testing.T) {
		// The same frame, claiming to come from a pod of cluster b, sent to gwa's
		// cable port from the remote gateway and from a stranger.
		frame := vxlanFrame(interVNI, clusterMAC("a"), clusterMAC("b"), netip.MustParseAddr("10.2.0.99"), podA, 9999)
		if !l.injected(frame, "gwb", wanA, DefaultVXLANPort) {
			t.Fatalf("a frame from the remote gateway did not arrive: the test cannot tell a drop\n%s", l.debug())
		}
		before := dropCounter(t, l, "gwa")
		if l.injected(frame, "evil", netip.MustParseAddr("198.18.2.1"), DefaultVXLANPort) {
			t.Errorf("a VXLAN frame from %s, not a remote gateway, reached a pod", "198.18.2.2")
		}
		if after := dropCounter(t, l, "gwa"); after <= before {
			t.Errorf("drop counter of the cable port went from %d to %d", before, after)
		}
	})

	t.Run("IntraVXLANOnlyFromClusterNodes", func(t *testing.T) {
		// A frame into the gateway's intra-cluster VXLAN, as a node of cluster a sends
		// it (inner source: a pod on that node), from the node and from a stranger on
		// the WAN: only the cluster's nodes may put frames into its pod network.
		frame := vxlanFrame(intraVNI, gatewayMAC("a"), nodeMAC("a"), podN, podA, 9999)
		if !l.injected(frame, "nodea", lanGw, DefaultIntraClusterPort) {
			t.Fatalf("an intra-cluster frame from the cluster's node did not arrive: the test cannot tell a drop\n%s", l.debug())
		}
		if l.injected(frame, "evil", netip.MustParseAddr("198.18.2.1"), DefaultIntraClusterPort) {
			t.Errorf("an intra-cluster VXLAN frame from %s, not a node of the cluster, reached a pod", "198.18.2.2")
		}
	})

	t.Run("SourceKeptDespiteMasquerade", func(t *testing.T) {
		// The CNI's masquerade in iptables on a's gateway, kube-proxy's (nftables
		// mode) on b's: both at srcnat, after mcnet's chain.
		masq := []string{"POSTROUTING", "-s", "10.1.0.0/16", "!", "-d", "10.1.0.0/16", "-j", "MASQUERADE"}
		l.exec("gwa", append([]string{"iptables", "-t", "nat", "-A"}, masq...)...)
		defer l.exec("gwa", append([]string{"iptables", "-t", "nat", "-D"}, masq...)...)
		l.exec("gwb", "nft", "add table ip kube-proxy-test { chain nat-postrouting { type nat hook postrouting priority srcnat; masquerade; }; }")
		defer l.exec("gwb", "nft", "delete table ip kube-proxy-test")
		l.checkTCPSource("podb", podB, "poda", podA)
		l.checkTCPSource("poda", podA, "podb", podB)
	})

	t.Run("HostForwardDropPolicy", func(t *testing.T) {
		// docs/dataplane.md: mcnet does not open a host firewall that drops by
		// default; the two allow rules it suggests are enough.
		l.exec("gwa", "iptables", "-P", "FORWARD", "DROP")
		defer l.exec("gwa", "iptables", "-P", "FORWARD", "ACCEPT")
		if out, err := l.try("poda", "ping", "-c", "2", "-W", "1", podB.String()); err == nil {
			t.Errorf("ping crossed a FORWARD DROP policy that nothing allows:\n%s", out)
		}
		allow := [][]string{
			{"FORWARD", "-s", "10.1.0.0/16", "-d", "10.2.0.0/16", "-j", "ACCEPT"},
			{"FORWARD", "-s", "10.2.0.0/16", "-d", "10.1.0.0/16", "-j", "ACCEPT"},
		}
		for _, r := range allow {
			l.exec("gwa", append([]string{"iptables", "-A"}, r...)...)
			defer l.exec("gwa", append([]string{"iptables", "-D"}, r...)...)
		}
		l.waitPing("poda", podB.String())
	})

	t.Run("PolicyStillApplies", func(t *testing.T) {
		// A drop in FORWARD, where iptables NetworkPolicy engines put theirs.
		rule := []string{"FORWARD", "-s", "10.2.0.0/16", "-d", podA.String(), "-j", "DROP"}
		l.exec("gwa", append([]string{"iptables", "-I"}, rule...)...)
		if out, err := l.try("podb", "ping", "-c", "2", "-W", "1", podA.String()); err == nil {
			t.Errorf("ping from cluster b crossed a drop rule in the destination's FORWARD:\n%s", out)
		}
		l.exec("gwa", append([]string{"iptables", "-D"}, rule...)...)
		l.waitPing("podb", podA.String())
	})
}

// dropCounter reads the packets counted by the cable port's IPv4 drop rule.
func dropCounter(t *testing.T, l *lab, role string) int {
	t.Helper()
	out := l.exec(role, "nft", "list", "chain", "inet", "mcnet", chainVXLANSources)
	for _, line := range lines(out) {
		if strings.Contains(line, fmt.Sprintf("dport %d", DefaultVXLANPort)) && strings.Contains(line, "ip saddr") {
			var n int
			if i := strings.Index(line, "counter packets "); i >= 0 {
				fmt.Sscanf(line[i+len("counter packets "):], "%d", &n)
				return n
			}
		}
	}
	t.Fatalf("no cable drop rule in:\n%s", out)
	return 0
}

// vxlanFrame builds a VXLAN payload (RFC 7348) carrying an Ethernet frame with an
// IPv4 UDP datagram "injected" from src to dst:port.
func vxlanFrame(vni int, dstMAC, srcMAC [6]byte, src, dst netip.Addr, port uint16) []byte {
	payload := []byte("injected")
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...) // checksum 0: none, allowed over IPv4
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	eth := append(append(dstMAC[:], srcMAC[:]...), 0x08, 0x00)
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return append(append(append(hdr, eth...), ip...), udp...)
}

// injected sends frame three times from namespace role to the UDP port of to, and
// reports whether its inner datagram ("injected", to poda:9999) reached poda.
func (l *lab) injected(frame []byte, role string, to netip.Addr, port uint16) bool {
	l.tb.Helper()
	var conn *net.UDPConn
	l.inNS("poda", func() {
		var err error
		if conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: podA.AsSlice(), Port: 9999}); err != nil {
			l.tb.Fatal(err)
		}
	})
	defer conn.Close()
	l.inNS(role, func() {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: to.AsSlice(), Port: int(port)})
		if err != nil {
			l.tb.Fatal(err)
		}
		defer c.Close()
		for range 3 {
			if _, err := c.Write(frame); err != nil {
				l.tb.Fatal(err)
			}
		}
	})
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 64)
	n, _, err := conn.ReadFromUDP(buf)
	return err == nil && string(buf[:n]) == "injected"
}
