package dataplane

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// peerMemoryRounds is how many probes each peer gets per benchmark op: more than
// wireguard-go's staged queue holds (QueueStagedSize, 128 on Linux), so an ungated
// device reaches the steady state a prober reaches after half a minute.
const peerMemoryRounds = 160

// BenchmarkWireGuardPeerMemory measures what userspace WireGuard costs per peer whose
// remote never answers a handshake (a dead cluster, a member not up yet), while
// probe-sized packets go to every peer as the gateway's prober sends them. A real
// mcnet dataplane runs as the active gateway in a namespace of its own with N
// WireGuard remotes whose endpoints sit in a second namespace where nothing listens;
// packets enter through the kernel TUN, from a socket in the gateway's namespace.
//
// It reports the gateway process's live heap (after a GC) and RSS per peer beyond the
// first, before any packet (idle-heap-B/peer) and after peerMemoryRounds probes to
// each peer, with
// the session gate (gate=on, what the gateway runs) and without it (gate=off, the bare
// wireguard-go device mcnet ran before). gate=off stops at 100 peers: it needs about
// 8 MiB each. MCNET_BENCH_WG_PEERS overrides the gated peer count (default 1000).
func BenchmarkWireGuardPeerMemory(b *testing.B) {
	requireRoot(b)
	many := 1000
	if n, err := strconv.Atoi(os.Getenv("MCNET_BENCH_WG_PEERS")); err == nil && n > 0 {
		many = n
	}
	for _, c := range []struct {
		gated bool
		peers int
	}{{false, 100}, {true, 100}, {true, many}} {
		gate := map[bool]string{false: "off", true: "on"}[c.gated]
		b.Run(fmt.Sprintf("gate=%s/peers=%d", gate, c.peers), func(b *testing.B) {
			benchPeerMemory(b, c.gated, c.peers)
		})
	}
}

func benchPeerMemory(b *testing.B, gated bool, peers int) {
	l := newNamespaces(b, "gwa", "wan")
	l.veth("gwa", "wan0", wanA.String()+"/24", "wan", "wan0", wanB.String()+"/24")
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	n := l.startHelper("gwa", exe, helperConfig{LinkPrefix: l.prefix["gwa"], StateDir: b.TempDir(), UngatedWireGuard: !gated})
	l.nodes["gwa"] = n
	mem := func() (heap, rss float64) {
		rep, err := n.call(helperRequest{Op: "mem"})
		if err != nil {
			b.Fatal(err)
		}
		return float64(rep.HeapBytes), float64(rep.RSSBytes)
	}
	apply := func(s State) {
		if _, err := n.call(helperRequest{Op: "apply", State: s}); err != nil {
			b.Fatal(err)
		}
	}

	state := State{ClusterID: "a", LocalCIDRs: prefixes("10.1.0.0/16"), Gateway: &Gateway{}}
	targets := make([]*net.UDPAddr, peers)
	for i := range peers {
		// 10.64.0.0/10: one /24 per remote, room for 16384.
		base := netip.AddrFrom4([4]byte{10, byte(64 + i>>8), byte(i), 0})
		state.Remotes = append(state.Remotes, Remote{
			ClusterID: fmt.Sprintf("r%d", i),
			CIDRs:     []netip.Prefix{netip.PrefixFrom(base, 24)},
			Cable:     Cable{Driver: DriverWireGuard, Endpoints: []netip.Addr{wanB}, PublicKey: testPub(fmt.Sprintf("remote-%d", i))},
		})
		targets[i] = &net.UDPAddr{IP: base.Next().AsSlice(), Port: 4800}
	}
	// The device with one peer is the baseline: the device's own buffers (its TUN and
	// UDP read batches, tens of MiB) do not grow with peers.
	one := state
	one.Remotes = state.Remotes[:1]
	apply(one)
	baseHeap, baseRSS := mem()
	apply(state)
	idleHeap, _ := mem()

	var conn *net.UDPConn
	var h *netlink.Handle
	l.inNS("gwa", func() {
		if conn, err = net.ListenUDP("udp4", &net.UDPAddr{}); err != nil {
			b.Fatal(err)
		}
		ns, err := netns.Get()
		if err != nil {
			b.Fatal(err)
		}
		defer ns.Close()
		if h, err = netlink.NewHandleAt(ns); err != nil {
			b.Fatal(err)
		}
	})
	b.Cleanup(func() { conn.Close(); h.Close() })
	link := l.prefix["gwa"] + "-wg"
	// taken is what left the TUN's queue: read by wireguard-go, or dropped when its
	// queue was full (the kernel counts a TUN's reads as transmissions).
	taken := func() uint64 {
		lk, err := h.LinkByName(link)
		if err != nil {
			b.Fatal(err)
		}
		st := lk.Attrs().Statistics
		return st.TxPackets + st.TxDropped
	}
	payload := append([]byte("MCNP\x01"), bytes.Repeat([]byte{0}, 8)...) // a probe's size
	start := taken()
	var sent uint64

	b.ResetTimer()
	for range b.N {
		for range peerMemoryRounds {
			for _, t := range targets {
				if _, err := conn.WriteToUDP(payload, t); err != nil {
					b.Fatal(err)
				}
			}
			sent += uint64(peers)
			// One round at a time, as a prober paces itself: wait until the TUN
			// handed this round over, so the queue does not overflow.
			for taken()-start < sent {
				runtime.Gosched()
			}
		}
	}
	b.StopTimer()

	heap, rss := mem()
	more := float64(peers - 1)
	b.ReportMetric((idleHeap-baseHeap)/more, "idle-heap-B/peer")
	b.ReportMetric((heap-baseHeap)/more, "heap-B/peer")
	b.ReportMetric((rss-baseRSS)/more, "rss-B/peer")
	b.ReportMetric(heap/(1<<20), "heap-MiB")
	b.ReportMetric(rss/(1<<20), "rss-MiB")
}

// memNow collects garbage and returns the live heap and the resident set size of
// this process. It collects twice: a sync.Pool (wireguard-go's buffer pools) keeps what
// it held for one more cycle. RSS lags the heap in a young process: pages of a buffer
// nothing has written yet are not resident until a reuse zeroes them.
func memNow() (heap, rss uint64, err error) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kib, err := strconv.ParseUint(string(bytes.Fields(v)[0]), 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("VmRSS: %w", err)
			}
			return ms.HeapAlloc, kib << 10, nil
		}
	}
	return 0, 0, fmt.Errorf("no VmRSS in /proc/self/status")
}
