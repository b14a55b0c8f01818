//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/network"
)

// What a hostile member does on the wire, from its gateway node: VXLAN frames into
// another member's cable port, forged liveness answers at another member's standby.
// The lab's WAN is one bridge that checks no source address, so from the attacker's
// node any source can be sent (a socket with IP_TRANSPARENT, as root on a host may).

// udpIn opens a UDP socket in ns bound to local. With spoof set the socket may bind
// and send from any address (IP_TRANSPARENT), whether or not ns owns it.
func udpIn(ns string, local netip.AddrPort, spoof bool) (*net.UDPConn, error) {
	var conn *net.UDPConn
	err := network.Do(ns, func() error {
		lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			if !spoof {
				return nil
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		pc, err := lc.ListenPacket(context.Background(), "udp4", local.String())
		if err != nil {
			return err
		}
		conn = pc.(*net.UDPConn)
		return nil
	})
	return conn, err
}

// vxlanFrame is a VXLAN payload (RFC 7348) of vni carrying an Ethernet frame to
// dstMAC with an IPv4 UDP datagram of payload from src to dst:port.
func vxlanFrame(vni uint32, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	udp := binary.BigEndian.AppendUint16(nil, 40000)
	udp = binary.BigEndian.AppendUint16(udp, port)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(binary.BigEndian.AppendUint16(udp, 0), payload...) // no checksum (IPv4)
	ip := []byte{0x45, 0, 0, 0, 0, 0, 0, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
	ip = append(append(ip, src.AsSlice()...), dst.AsSlice()...)
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	eth := append(bytes.Clone(dstMAC), 0x02, 0xee, 0xee, 0xee, 0xee, 0x01, 0x08, 0x00)
	hdr := []byte{0x08, 0, 0, 0, byte(vni >> 16), byte(vni >> 8), byte(vni), 0}
	return bytes.Join([][]byte{hdr, eth, ip, udp}, nil)
}

// vxlanLink is a VXLAN device of a node as the kernel reports it.
type vxlanLink struct {
	name string
	mac  net.HardwareAddr
	vni  uint32
	port uint16
}

// vxlanLinks lists the VXLAN devices of node n.
func vxlanLinks(ctx context.Context, n *lab.Node) ([]vxlanLink, error) {
	out, err := n.Exec(ctx, "ip", "-d", "-j", "link", "show", "type", "vxlan")
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	var links []struct {
		Name     string `json:"ifname"`
		Address  string `json:"address"`
		LinkInfo struct {
			Data struct {
				ID   uint32 `json:"id"`
				Port uint16 `json:"port"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("ip -j link on %s: %w: %s", n.Name, err, out)
	}
	var vs []vxlanLink
	for _, l := range links {
		mac, err := net.ParseMAC(l.Address)
		if err != nil {
			return nil, err
		}
		vs = append(vs, vxlanLink{l.Name, mac, l.LinkInfo.Data.ID, l.LinkInfo.Data.Port})
	}
	return vs, nil
}

// vxlanDrops reads the packets counted by the IPv4 drop rule of mcnet's vxlan-sources
// chain on n for the given port.
func vxlanDrops(ctx context.Context, n *lab.Node, port uint16) (int, error) {
	out, err := n.Exec(ctx, "nft", "list", "chain", "inet", "mcnet", "vxlan-sources")
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, fmt.Sprintf("dport %d ", port)) && strings.Contains(line, "ip saddr") {
			if _, rest, ok := strings.Cut(line, "counter packets "); ok {
				return strconv.Atoi(strings.Fields(rest)[0])
			}
		}
	}
	return 0, fmt.Errorf("%s: no IPv4 drop rule for port %d in vxlan-sources:\n%s", n.Name, port, out)
}

// udpSink counts the datagrams that reach a UDP port inside a pod.
type udpSink struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  map[string]int // payload → times received
}

func listenUDP(p *lab.Pod, port uint16) (*udpSink, error) {
	conn, err := udpIn(p.Netns, netip.AddrPortFrom(netip.IPv4Unspecified(), port), false)
	if err != nil {
		return nil, fmt.Errorf("listen on %s:%d: %w", p, port, err)
	}
	s := &udpSink{conn: conn, got: map[string]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.got[string(buf[:n])]++
			s.mu.Unlock()
		}
	}()
	return s, nil
}

func (s *udpSink) count(payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[payload]
}

// injected sends frame 5 times from ns (from src when valid, spoofed) to dst and says
// whether payload reached the sink within wait.
func injected(ns string, src, dst netip.AddrPort, frame []byte, sink *udpSink, payload string, wait time.Duration) (bool, error) {
	local := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if src.IsValid() {
		local = src
	}
	conn, err := udpIn(ns, local, src.IsValid())
	if err != nil {
		return false, err
	}
	defer conn.Close()
	for range 5 {
		if _, err := conn.WriteToUDPAddrPort(frame, dst); err != nil {
			return false, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	end := time.Now().Add(wait)
	for time.Now().Before(end) {
		if sink.count(payload) > 0 {
			return true, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false, nil
}

// checkVXLANInjection sends, to the cable port of target's active gateway, VXLAN
// frames whose inner packet is a UDP datagram from a pod of via's cluster to srv, a
// pod of target: from via's active gateway (a current remote gateway of target:
// admitted, or the test could not tell a drop) and from attacker with a source that
// is not a current remote gateway of target (dropped by the vxlan-sources chain,
// whose counter must move).
func checkVXLANInjection(t *testing.T, target *lab.Cluster, via *lab.Cluster, from, srv *lab.Pod, attacker *lab.Node) {
	ctx := t.Context()
	gn := target.Node(waitActiveGateway(t, target).Name)
	vn := via.Node(waitActiveGateway(t, via).Name)
	links, err := vxlanLinks(ctx, gn)
	if err != nil {
		t.Fatal(err)
	}
	var cable vxlanLink
	for _, l := range links {
		if l.name == "mcnet-vx" {
			cable = l
		}
	}
	if cable.name == "" {
		t.Fatalf("%s has no VXLAN cable mcnet-vx: %+v", gn.Name, links)
	}
	const port = 9999
	sink, err := listenUDP(srv, port)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.conn.Close()
	dst := netip.AddrPortFrom(gn.PublicIP, cable.port)
	send := func(what, ns string, src netip.AddrPort) bool {
		payload := "injected " + what
		frame := vxlanFrame(cable.vni, cable.mac, from.IP, srv.IP, port, []byte(payload))
		ok, err := injected(ns, src, dst, frame, sink, payload, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return ok
	}
	t.Logf("frames of VNI %d to %s (%s's cable port), inner %s -> %s:%d", cable.vni, dst, gn.Name, from.IP, srv.IP, port)

	// The same frame from a current remote gateway gets in: the frames are right.
	if err := lab.Eventually(ctx, 10*time.Second, func(context.Context) error {
		if !send("from "+vn.Name, vn.Netns, netip.AddrPort{}) {
			return fmt.Errorf("a frame from %s (%s, a current remote gateway of %s) did not reach %s: the test cannot tell a drop", vn.Name, vn.PublicIP, target.Name, srv)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// From the attacker's node with an address no current gateway has.
	stranger := netip.AddrPortFrom(netip.MustParseAddr("198.19.255.254"), 0)
	if !network.WANPrefix.Contains(stranger.Addr()) {
		t.Fatalf("%s is not on the WAN %s", stranger.Addr(), network.WANPrefix)
	}
	before, err := vxlanDrops(ctx, gn, cable.port)
	if err != nil {
		t.Fatal(err)
	}
	if send("from "+attacker.Name+" as "+stranger.Addr().String(), attacker.Netns, stranger) {
		t.Errorf("a VXLAN frame from %s (on %s, not a remote gateway of %s) reached %s", stranger.Addr(), attacker.Name, target.Name, srv)
	}
	after, err := vxlanDrops(ctx, gn, cable.port)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 5 {
		t.Errorf("%s: vxlan-sources dropped %d of the 5 frames from %s (counter %d -> %d)", gn.Name, after-before, stranger.Addr(), before, after)
	}
	t.Logf("%s: vxlan-sources dropped %d frames from %s; the same frame from %s reached %s", gn.Name, after-before, stranger.Addr(), vn.PublicIP, srv)

	// Known gaps (docs/trust.md, "Not defended yet"), measured and reported, not
	// failed: a current remote gateway sending inner packets with a third member's
	// pod addresses, or with another member's gateway address as its source.
	got := send("from "+attacker.Name+" at its own address", attacker.Netns, netip.AddrPort{})
	t.Logf("KNOWN GAP: a frame from %s (a current remote gateway of %s) with %s's pod %s as inner source reached %s: %v", attacker.Name, target.Name, via.Name, from.IP, srv, got)
	got = send("from "+attacker.Name+" as "+vn.PublicIP.String(), attacker.Netns, netip.AddrPortFrom(vn.PublicIP, 0))
	t.Logf("KNOWN GAP: a frame from %s spoofing %s's address %s (the WAN checks no source) reached %s: %v", attacker.Name, vn.Name, vn.PublicIP, srv, got)
	for _, l := range links {
		if l.name == cable.name {
			continue
		}
		payload := "injected intra " + l.name
		frame := vxlanFrame(l.vni, l.mac, from.IP, srv.IP, port, []byte(payload))
		ok, err := injected(attacker.Netns, stranger, netip.AddrPortFrom(gn.PublicIP, l.port), frame, sink, payload, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		// The intra-cluster port admits only the cluster's own nodes.
		if ok {
			t.Errorf("a frame of VNI %d to %s:%d (%s, the intra-cluster port) from %s on the WAN, not a node of %s, reached %s", l.vni, gn.PublicIP, l.port, l.name, stranger.Addr(), target.Name, srv)
		} else {
			t.Logf("a frame of VNI %d to %s:%d (%s, the intra-cluster port) from %s on the WAN was dropped", l.vni, gn.PublicIP, l.port, l.name, stranger.Addr())
		}
	}
}

// Liveness wire format (controllers/gateway/election/liveness.go): 4 bytes magic,
// 1 byte kind; a challenge adds a 16-byte nonce, an answer the nonce and an
// HMAC-SHA256.
const (
	livenessChallenge = 3
	livenessAnswer    = 4
	livenessNonce     = 16
)

var livenessMagic = []byte("MCNL")

// livenessCounter is an nftables table of the test's own on a node that counts the
// liveness datagrams arriving on the WAN interface: at prerouting (they reached the
// node) and at input (past the reverse-path filter, delivered to local sockets).
type livenessCounter struct {
	n     *lab.Node
	table string
}

func countLiveness(ctx context.Context, n *lab.Node) (*livenessCounter, error) {
	c := &livenessCounter{n: n, table: "mcnet-trust-test"}
	rule := fmt.Sprintf(`iifname "wan0" udp dport %d counter`, mcnetv1.DefaultLivenessPort)
	def := fmt.Sprintf("table inet %s { chain pre { type filter hook prerouting priority -400; %s; }; chain in { type filter hook input priority 100; %s; }; }", c.table, rule, rule)
	if out, err := n.Exec(ctx, "nft", def); err != nil {
		return nil, fmt.Errorf("%w: %s", err, out)
	}
	return c, nil
}

// read returns the packets counted at prerouting and at input.
func (c *livenessCounter) read(ctx context.Context) (pre, in int, err error) {
	out, err := c.n.Exec(ctx, "nft", "list", "table", "inet", c.table)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: %s", err, out)
	}
	var counts []int
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "counter packets "); ok {
			v, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				return 0, 0, err
			}
			counts = append(counts, v)
		}
	}
	if len(counts) != 2 {
		return 0, 0, fmt.Errorf("%s: want two counters in:\n%s", c.n.Name, out)
	}
	return counts[0], counts[1], nil
}

func (c *livenessCounter) remove(ctx context.Context) error {
	if out, err := c.n.Exec(ctx, "nft", "delete", "table", "inet", c.table); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// recordAnswers asks the liveness port of holder from attacker n times, as anyone on
// the WAN may, and returns the answers: genuine MACs under the cluster's key, for the
// current holder and term, of nonces the attacker chose.
func recordAnswers(attacker, holder *lab.Node, n int) ([][]byte, error) {
	conn, err := udpIn(attacker.Netns, netip.AddrPortFrom(netip.IPv4Unspecified(), 0), false)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	to := netip.AddrPortFrom(holder.WANIP, mcnetv1.DefaultLivenessPort)
	for range n {
		req := append(append(bytes.Clone(livenessMagic), livenessChallenge), rand.Text()[:livenessNonce]...)
		if _, err := conn.WriteToUDPAddrPort(req, to); err != nil {
			return nil, err
		}
	}
	var answers [][]byte
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	for len(answers) < n {
		k, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		if k > 5 && bytes.Equal(buf[:4], livenessMagic) && buf[4] == livenessAnswer {
			answers = append(answers, bytes.Clone(buf[:k]))
		}
	}
	return answers, nil
}

// forgedAnswers is what the flood sends: the recorded answers, and as many made up
// (random nonces and MACs of the right length).
func forgedAnswers(recorded [][]byte, size int) [][]byte {
	out := append([][]byte(nil), recorded...)
	for range max(len(recorded), 16) {
		a := append(bytes.Clone(livenessMagic), livenessAnswer)
		a = append(a, make([]byte, size-len(a))...)
		_, _ = rand.Read(a[5:])
		out = append(out, a)
	}
	return out
}

// flood sends answers round-robin from ns, spoofing src, to dst every interval until
// stop is called; stop returns how many were sent.
func flood(ns string, src, dst netip.AddrPort, answers [][]byte, interval time.Duration) (stop func() (int, error), err error) {
	conn, err := udpIn(ns, src, true)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var sent int
	var sendErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if _, err := conn.WriteToUDPAddrPort(answers[i%len(answers)], dst); err != nil {
				sendErr = err
				return
			}
			sent++
		}
	})
	return func() (int, error) {
		close(done)
		wg.Wait()
		conn.Close()
		return sent, sendErr
	}, nil
}

// signalGateway sends sig to the processes of the mcnet-gateway pod on node of c.
func signalGateway(ctx context.Context, c *lab.Cluster, node string, sig syscall.Signal) error {
	pods, err := c.WorkloadPods(ctx, "mcnet-gateway")
	if err != nil {
		return err
	}
	var errs []error
	n := 0
	for _, p := range pods {
		if p.Node == nil || p.Node.Name != node {
			continue
		}
		for _, pid := range p.PIDs {
			n++
			errs = append(errs, syscall.Kill(pid, sig))
		}
	}
	if n == 0 {
		return fmt.Errorf("%s: no running mcnet-gateway process on %s", c.Name, node)
	}
	return errors.Join(errs...)
}

// failoverBound is how long a standby may take to replace a frozen holder here: the
// Lease lasts 1 s and is retried every 200 ms, so it takes over about 1-1.6 s after
// the holder's last renewal (docs/gateways.md), with room for a loaded lab. A forged
// answer believed would keep the holder for as long as the answers come, up to 30 s.
const failoverBound = 3 * time.Second

// freezeHolder waits until c's standby hears its active gateway on the liveness port,
// freezes (SIGSTOP) the active gateway's process and measures the time until the
// standby holds the Lease; attack (if set) starts before the freeze and returns the
// function that ends it, called once the standby took over. The frozen process is
// then killed, its kubelet starts it again, and freezeHolder returns once every
// connection of the lab is up.
func freezeHolder(t *testing.T, l *connectedLab, c *lab.Cluster, attack func(holder, standby *lab.Node) func()) (time.Duration, string) {
	ctx := t.Context()
	holder, err := leaseHolder(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	hn := c.Node(holder)
	var sn *lab.Node
	for _, g := range c.Gateways() {
		if g.Name != holder {
			sn = g
		}
	}
	if hn == nil || sn == nil {
		t.Fatalf("%s: holder %q and a standby among %d gateways", c.Name, holder, len(c.Gateways()))
	}
	// The standby has the key and hears the holder's genuine answers: without them it
	// would believe no answer at all, forged or not.
	if err := standbyReaches(ctx, c, "True", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	var end func()
	if attack != nil {
		end = attack(hn, sn)
	}
	if err := signalGateway(ctx, c, holder, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	frozen := true
	thaw := func() {
		if frozen {
			frozen = false
			// Killed, not continued: its kubelet starts a new process, which stands by.
			if err := c.Kill(context.WithoutCancel(ctx), "mcnet-gateway", holder); err != nil {
				t.Error(err)
			}
		}
	}
	defer thaw()
	var took time.Duration
	var next string
	err = poll(ctx, 40*time.Second, 20*time.Millisecond, func(ctx context.Context) error {
		h, err := leaseHolder(ctx, c)
		if err != nil {
			return err
		}
		if h == holder {
			return fmt.Errorf("%s still holds the Lease", holder)
		}
		took, next = time.Since(start), h
		return nil
	})
	if end != nil {
		end()
	}
	if err != nil {
		t.Fatalf("%s: frozen holder %s never replaced: %v", c.Name, holder, err)
	}
	thaw()
	if err := l.waitConnected(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	return took, next
}
