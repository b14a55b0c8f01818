package dataplane

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// TestKernel runs the dataplane of three nodes in network namespaces and checks what a
// user would notice: pods reach remote pods both ways with their own source address
// (TCP and ICMP), also from a node that is not the gateway; full-size packets with DF
// set cross; a second Apply changes nothing; a smaller State removes the difference;
// Cleanup leaves nothing behind.
func TestKernel(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		driver Driver
		mtu    int // tunnel MTU on a 1500 underlay
	}{
		{DriverVXLAN, 1450},
		{DriverWireGuard, 1420},
	} {
		t.Run(string(tc.driver), func(t *testing.T) {
			l := newLab(t)
			l.startNodes()
			states := l.applyAll(tc.driver)

			// Reachability first (the WireGuard handshake takes a round trip).
			for _, p := range [][2]string{{"poda", podB.String()}, {"podb", podA.String()}, {"podn", podB.String()}, {"podb", podN.String()}} {
				l.waitPing(p[0], p[1])
			}
			t.Run("TCPSourcePreserved", func(t *testing.T) {
				l.checkTCPSource("podb", podB, "poda", podA)
				l.checkTCPSource("poda", podA, "podb", podB)
				l.checkTCPSource("podb", podB, "podn", podN)
				l.checkTCPSource("podn", podN, "podb", podB)
			})
			t.Run("ICMPSourcePreserved", func(t *testing.T) {
				l.checkICMPSource("podb", "poda", podA, podB)
				l.checkICMPSource("poda", "podb", podB, podA)
				l.checkICMPSource("podb", "podn", podN, podB)
			})
			if tc.driver == DriverVXLAN {
				t.Run("OuterPacketsUntracked", func(t *testing.T) { l.checkUntracked() })
			}
			t.Run("PathMTU", func(t *testing.T) {
				size := strconv.Itoa(tc.mtu - 28) // IPv4 20 + ICMP 8
				for _, from := range []string{"poda", "podn"} {
					if out, err := l.try(from, "ping", "-M", "do", "-c", "1", "-W", "2", "-s", size, podB.String()); err != nil {
						t.Errorf("%s: DF ping of %d bytes: %v\n%s", from, tc.mtu, err, out)
					}
				}
				// One byte more does not fit: the MTU is the one claimed, not larger.
				if out, err := l.try("poda", "ping", "-M", "do", "-c", "1", "-W", "1", "-s", strconv.Itoa(tc.mtu-27), podB.String()); err == nil {
					t.Errorf("DF ping of %d bytes crossed a %d MTU tunnel\n%s", tc.mtu+1, tc.mtu, out)
				}
				if got := l.linkMTU("gwa", l.cableLink("gwa", tc.driver)); got != tc.mtu {
					t.Errorf("cable MTU = %d, want %d", got, tc.mtu)
				}
			})
			if tc.driver == DriverWireGuard {
				t.Run("WireGuardVisible", func(t *testing.T) { l.checkWireGuard(states) })
			}
			t.Run("Idempotent", func(t *testing.T) {
				for _, role := range []string{"gwa", "gwb", "nodea"} {
					before := l.dump(role)
					rep, err := l.nodes[role].call(helperRequest{Op: "apply", State: states[role]})
					if err != nil {
						t.Fatal(err)
					}
					if rep.Changes != 0 {
						t.Errorf("%s: second Apply made %d kernel changes, want 0", role, rep.Changes)
					}
					if diff := cmp.Diff(before, l.dump(role)); diff != "" {
						t.Errorf("%s: kernel changed by a second Apply (-before +after):\n%s", role, diff)
					}
				}
			})
			t.Run("Shrink", func(t *testing.T) { l.checkShrink(states) })
			t.Run("Cleanup", func(t *testing.T) {
				for _, role := range []string{"gwa", "gwb", "nodea"} {
					if _, err := l.nodes[role].call(helperRequest{Op: "cleanup"}); err != nil {
						t.Fatal(err)
					}
					if got := l.dump(role); got != "" {
						t.Errorf("%s: left behind after Cleanup:\n%s", role, got)
					}
					if _, err := os.Stat("/var/run/wireguard/" + l.prefix[role] + "-wg.sock"); !os.IsNotExist(err) {
						t.Errorf("%s: userspace wireguard socket still present (%v)", role, err)
					}
					rep, err := l.nodes[role].call(helperRequest{Op: "cleanup"})
					if err != nil || rep.Changes != 0 {
						t.Errorf("%s: second Cleanup: %d changes, err %v", role, rep.Changes, err)
					}
				}
			})
		})
	}
}

// applyAll exchanges public keys (as the broker would) and applies every node's State.
func (l *lab) applyAll(driver Driver) map[string]State {
	l.tb.Helper()
	var keyA, keyB Key
	if driver == DriverWireGuard {
		keyA, keyB = l.key("gwa"), l.key("gwb")
	}
	states := l.states(driver, keyA, keyB)
	for _, role := range []string{"gwa", "gwb", "nodea"} {
		if _, err := l.nodes[role].call(helperRequest{Op: "apply", State: states[role]}); err != nil {
			l.tb.Fatal(err)
		}
	}
	return states
}

func (l *lab) key(role string) Key {
	l.tb.Helper()
	rep, err := l.nodes[role].call(helperRequest{Op: "key"})
	if err != nil {
		l.tb.Fatal(err)
	}
	return rep.Key
}

func (l *lab) cableLink(role string, d Driver) string {
	if d == DriverWireGuard {
		return l.prefix[role] + "-wg"
	}
	return l.prefix[role] + "-vx"
}

// waitPing polls until one ping gets through: a deadline, not a sleep.
func (l *lab) waitPing(from, to string) {
	l.tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := l.try(from, "ping", "-c", "1", "-W", "1", to)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			l.tb.Fatalf("%s cannot ping %s: %v\n%s\n%s", from, to, err, out, l.debug())
		}
	}
}

// checkUntracked checks, after pods talked through the tunnels, that conntrack on
// every node tracked the pods' connections but none of the VXLAN packets that
// carried them (ports 4789 and 4790).
func (l *lab) checkUntracked() {
	l.tb.Helper()
	for _, role := range []string{"gwa", "gwb", "nodea"} {
		out, err := l.try(role, "conntrack", "-L", "-p", "tcp")
		if err != nil || !strings.Contains(out, "src=10.") {
			l.tb.Errorf("%s: no tracked pod connection (the check proves nothing): %v\n%s", role, err, out)
		}
		for _, port := range []string{"4789", "4790"} {
			out, err := l.try(role, "conntrack", "-L", "-p", "udp", "--dport", port)
			if err != nil || strings.Contains(out, "dport="+port) {
				l.tb.Errorf("%s: VXLAN packets to port %s tracked: %v\n%s", role, port, err, out)
			}
		}
	}
}

// checkTCPSource connects from a pod to a server in another pod and checks the server
// saw the client's pod address.
func (l *lab) checkTCPSource(server string, serverIP netip.Addr, client string, clientIP netip.Addr) {
	l.tb.Helper()
	var ln net.Listener
	l.inNS(server, func() {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(serverIP, 0).String())
		if err != nil {
			l.tb.Fatal(err)
		}
	})
	defer ln.Close()
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
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 10*time.Second)
		if err != nil {
			l.tb.Fatalf("%s -> %s: %v", client, server, err)
		}
	})
	defer c.Close()
	if got := <-seen; got != clientIP.String() {
		l.tb.Errorf("TCP %s -> %s: server saw source %s, want %s", client, server, got, clientIP)
	}
}

// checkICMPSource pings from a pod and checks, with a raw socket in the receiving pod,
// that the echo request arrived with the sender's pod address.
func (l *lab) checkICMPSource(receiver, sender string, senderIP, receiverIP netip.Addr) {
	l.tb.Helper()
	var pc *icmp.PacketConn
	l.inNS(receiver, func() {
		var err error
		pc, err = icmp.ListenPacket("ip4:icmp", receiverIP.String())
		if err != nil {
			l.tb.Fatal(err)
		}
	})
	defer pc.Close()
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 1500)
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				got <- err.Error()
				return
			}
			m, err := icmp.ParseMessage(1, buf[:n])
			if err == nil && m.Type == ipv4.ICMPTypeEcho {
				got <- from.String()
				return
			}
		}
	}()
	if out, err := l.try(sender, "ping", "-c", "1", "-W", "2", receiverIP.String()); err != nil {
		l.tb.Errorf("ping %s -> %s: %v\n%s", sender, receiver, err, out)
	}
	if src := <-got; src != senderIP.String() {
		l.tb.Errorf("ICMP %s -> %s: receiver saw source %s, want %s", sender, receiver, src, senderIP)
	}
}

// checkWireGuard checks wg(8) sees the userspace device and that Stats reports a
// recent handshake and traffic for the peer.
func (l *lab) checkWireGuard(states map[string]State) {
	l.tb.Helper()
	dev := l.prefix["gwa"] + "-wg"
	out := l.exec("gwa", "wg", "show", dev, "peers")
	if want := states["gwa"].Remotes[0].Cable.PublicKey.String(); strings.TrimSpace(out) != want {
		l.tb.Errorf("wg show %s peers = %q, want %q", dev, out, want)
	}
	rep, err := l.nodes["gwa"].call(helperRequest{Op: "stats"})
	if err != nil {
		l.tb.Fatal(err)
	}
	if len(rep.Stats) != 1 {
		l.tb.Fatalf("stats = %+v, want one cable", rep.Stats)
	}
	st := rep.Stats[0]
	if st.ClusterID != "b" || st.Driver != DriverWireGuard || st.LastHandshake.IsZero() || st.RxBytes == 0 || st.TxBytes == 0 {
		l.tb.Errorf("stats = %+v, want cluster b with a handshake and traffic", st)
	}
	if st.Endpoint != netip.AddrPortFrom(wanB, DefaultWireGuardPort) {
		l.tb.Errorf("stats endpoint = %s, want %s:%d", st.Endpoint, wanB, DefaultWireGuardPort)
	}
}

// checkShrink drops the remote service CIDR and checks its route, rule and filter
// rules are gone while the pod CIDR keeps working.
func (l *lab) checkShrink(states map[string]State) {
	l.tb.Helper()
	const dropped = "10.102.0.0/16"
	for _, role := range []string{"gwa", "nodea"} {
		s := states[role]
		r := s.Remotes[0]
		r.CIDRs = slices.DeleteFunc(slices.Clone(r.CIDRs), func(p netip.Prefix) bool { return p.String() == dropped })
		s.Remotes = []Remote{r}
		if _, err := l.nodes[role].call(helperRequest{Op: "apply", State: s}); err != nil {
			l.tb.Fatal(err)
		}
		dump := l.dump(role)
		if strings.Contains(dump, dropped) {
			l.tb.Errorf("%s: %s still in the kernel after shrinking:\n%s", role, dropped, dump)
		}
		if !strings.Contains(dump, "10.2.0.0/16") {
			l.tb.Errorf("%s: 10.2.0.0/16 vanished with the shrink:\n%s", role, dump)
		}
	}
	l.waitPing("poda", podB.String())
	l.waitPing("podn", podB.String())
}

func (l *lab) linkMTU(role, link string) int {
	l.tb.Helper()
	out := l.exec(role, "cat", "/sys/class/net/"+link+"/mtu")
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		l.tb.Fatalf("mtu of %s: %v", link, err)
	}
	return n
}

// dump reads back, with the standard tools, everything mcnet may own in a node:
// its links (with their neighbour and FDB entries), the mcnet table, rules pointing
// at it, its nftables table and any iptables chain named like an old mcnet one. Empty means nothing of mcnet is left.
func (l *lab) dump(role string) string {
	l.tb.Helper()
	var b strings.Builder
	prefix := l.prefix[role] + "-"
	for _, line := range strings.Split(l.ip(role, "-o", "-d", "link", "show"), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], prefix) {
			name := strings.TrimSuffix(f[1], ":")
			// Drop the per-device statistics-free fields that change with traffic.
			fmt.Fprintf(&b, "link %s\n", line[strings.Index(line, name):])
			for _, fam := range []string{"-4", "-6"} {
				for _, n := range lines(l.ip(role, fam, "neigh", "show", "dev", name, "nud", "permanent")) {
					fmt.Fprintf(&b, "neigh %s %s\n", name, n)
				}
			}
			for _, n := range lines(l.run("bridge", "-n", l.ns[role], "fdb", "show", "dev", name)) {
				fmt.Fprintf(&b, "fdb %s %s\n", name, n)
			}
		}
	}
	for _, fam := range []string{"-4", "-6"} {
		// An IPv6 table that never had a route does not exist: an error, not a leak.
		out, _ := l.try(role, "ip", fam, "route", "show", "table", strconv.Itoa(DefaultTable))
		for _, r := range lines(out) {
			if strings.Contains(r, "FIB table does not exist") || strings.Contains(r, "Dump terminated") {
				continue
			}
			fmt.Fprintf(&b, "route %s %s\n", fam, r)
		}
		for _, r := range lines(l.ip(role, fam, "rule", "show")) {
			if strings.Contains(r, "lookup "+strconv.Itoa(DefaultTable)) {
				fmt.Fprintf(&b, "rule %s %s\n", fam, r)
			}
		}
	}
	b.WriteString(l.nftDump(role))
	for _, ipt := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			for _, r := range lines(l.exec(role, ipt, "-t", table, "-S")) {
				if strings.Contains(r, "MCNET") {
					fmt.Fprintf(&b, "%s %s %s\n", ipt, table, r)
				}
			}
		}
	}
	return b.String()
}

// nftDump is mcnet's nftables table in role's namespace as nft decodes it,
// normalised into nftView lines; empty when there is no table.
func (l *lab) nftDump(role string) string {
	l.tb.Helper()
	out, err := l.try(role, "nft", "list", "table", "inet", "mcnet")
	if err != nil {
		if strings.Contains(out, "No such file or directory") {
			return ""
		}
		l.tb.Fatalf("nft list table: %v\n%s", err, out)
	}
	s, err := normalizeNFT("inet", out)
	if err != nil {
		l.tb.Fatalf("%v\n%s", err, out)
	}
	return s
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// debug collects kernel state of every node for a failure message.
func (l *lab) debug() string {
	var b strings.Builder
	for _, role := range []string{"gwa", "gwb", "nodea"} {
		fmt.Fprintf(&b, "--- %s\n%s", role, l.dump(role))
		out, _ := l.try(role, "ip", "route")
		b.WriteString(out)
		out, _ = l.try(role, "ip", "-s", "-o", "link")
		b.WriteString(out)
		out, _ = l.try(role, "sh", "-c", "grep -H . /proc/sys/net/ipv4/conf/*/rp_filter; nstat -az | grep -i -e drop -e RPF -e Filter | grep -v ' 0 '")
		b.WriteString(out)
		out, _ = l.try(role, "sysctl", "net.ipv4.ip_forward", "net.ipv4.conf.all.rp_filter")
		b.WriteString(out)
	}
	return b.String()
}

// TestKernelDriverSwitch changes the cable driver of running nodes without Cleanup in
// between, as a fleet edit would, and checks pods on both the gateway and the other
// node keep reaching the remote cluster after each Apply.
func TestKernelDriverSwitch(t *testing.T) {
	requireRoot(t)
	l := newLab(t)
	l.startNodes()
	for _, d := range []Driver{DriverVXLAN, DriverWireGuard, DriverVXLAN} {
		l.applyAll(d)
		l.waitPing("poda", podB.String())
		l.waitPing("podn", podB.String())
		l.waitPing("podb", podN.String())
		if d == DriverVXLAN && strings.Contains(l.dump("gwa"), "-wg") {
			t.Errorf("wireguard link left after switching back to vxlan:\n%s", l.dump("gwa"))
		}
	}
}
