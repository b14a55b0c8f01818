package dataplane

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.zx2c4.com/wireguard/conn/bindtest"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// fakeTUN hands out queued reads of packets, one batch per Read.
type fakeTUN struct {
	tun.Device
	batches [][][]byte
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(f.batches) == 0 {
		return 0, os.ErrClosed
	}
	batch := f.batches[0]
	f.batches = f.batches[1:]
	for i, p := range batch {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(batch), nil
}

// packetTo is a minimal IP header addressed to dst, with a marker byte after it.
func packetTo(dst string, mark byte) []byte {
	a := netip.MustParseAddr(dst)
	if a.Is4() {
		p := make([]byte, 21)
		p[0] = 0x45
		copy(p[16:20], a.AsSlice())
		p[20] = mark
		return p
	}
	p := make([]byte, 41)
	p[0] = 0x60
	copy(p[24:40], a.AsSlice())
	p[40] = mark
	return p
}

func gateKey(name string) device.NoisePublicKey { return device.NoisePublicKey(testPub(name)) }

// readAll reads batches through g until the fake runs dry and returns the markers of
// the packets that reached wireguard-go, batch by batch.
func readAll(t *testing.T, g *sessionGate) [][]byte {
	t.Helper()
	const offset = 16
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = make([]byte, 128)
	}
	sizes := make([]int, len(bufs))
	var got [][]byte
	for {
		n, err := g.Read(bufs, sizes, offset)
		var marks []byte
		for i := range n {
			marks = append(marks, bufs[i][offset+sizes[i]-1])
		}
		if n > 0 {
			got = append(got, marks)
		}
		if err != nil {
			return got
		}
	}
}

// TestSessionGate: packets of a peer without a session stop at the TUN, one per
// gateRetryAfter excepted; a peer with a session, a longer prefix of a live peer inside
// a held one, and destinations of no peer pass; kept packets keep their order.
func TestSessionGate(t *testing.T) {
	now := time.Now()
	peers := []gatePeerState{
		{key: gateKey("dead"), allowedIPs: prefixes("10.64.0.0/16", "fd00:64::/64")},
		{key: gateKey("live"), handshake: now.Add(-time.Minute), allowedIPs: prefixes("10.65.0.0/16", "10.64.7.0/24")},
		{key: gateKey("expired"), handshake: now.Add(-device.RejectAfterTime - time.Second), allowedIPs: prefixes("10.66.0.0/16")},
	}
	ft := &fakeTUN{batches: [][][]byte{
		{packetTo("10.64.0.1", 'a'), packetTo("10.65.0.1", 'b'), packetTo("10.64.0.2", 'c'), packetTo("10.64.7.1", 'd'), packetTo("10.99.0.1", 'e')},
		{packetTo("10.64.0.3", 'f'), packetTo("fd00:64::1", 'g'), packetTo("10.66.0.1", 'h'), packetTo("10.66.0.2", 'i')},
		{packetTo("10.64.0.4", 'j')}, // all dropped: Read goes on to the next batch
		{packetTo("10.65.0.9", 'k')},
	}}
	g := newSessionGate(ft)
	var flushed []device.NoisePublicKey
	k := newGateKeeper(g, func(key device.NoisePublicKey) { flushed = append(flushed, key) })
	k.update(peers, now)

	// 'a' is dead's one packet (it triggers wireguard-go's handshake), 'c', 'f', 'g' and
	// 'j' wait; expired is held like a peer that never had a session.
	want := [][]byte{[]byte("abde"), []byte("h"), []byte("k")}
	if diff := cmp.Diff(want, readAll(t, g)); diff != "" {
		t.Errorf("packets passed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]device.NoisePublicKey{gateKey("dead"), gateKey("expired")}, flushed); diff != "" {
		t.Errorf("flushed when held (-want +got):\n%s", diff)
	}

	// A later poll: still held, nothing flushed again, and the budget is spent.
	flushed = nil
	k.update(peers, now.Add(time.Second))
	ft.batches = [][][]byte{{packetTo("10.64.0.1", 'l'), packetTo("10.65.0.1", 'm')}}
	if diff := cmp.Diff([][]byte{[]byte("m")}, readAll(t, g)); diff != "" {
		t.Errorf("held peer after its one packet (-want +got):\n%s", diff)
	}
	if len(flushed) != 0 {
		t.Errorf("flushed %d peers already held", len(flushed))
	}

	// After gateRetryAfter one more packet goes through.
	k.gate.held.Load().byPrefix[netip.MustParsePrefix("10.64.0.0/16")].lastPass.Add(-int64(gateRetryAfter))
	ft.batches = [][][]byte{{packetTo("10.64.0.1", 'n'), packetTo("10.64.0.1", 'o')}}
	if diff := cmp.Diff([][]byte{[]byte("n")}, readAll(t, g)); diff != "" {
		t.Errorf("held peer after gateRetryAfter (-want +got):\n%s", diff)
	}

	// The remote comes back: once a poll sees the handshake, everything passes and
	// the gate is out of the data path.
	peers[0].handshake, peers[2].handshake = now.Add(2*time.Second), now.Add(2*time.Second)
	k.update(peers, now.Add(2*time.Second))
	if k.gate.held.Load() != nil {
		t.Error("gate still has a table with every peer in session")
	}
	ft.batches = [][][]byte{{packetTo("10.64.0.1", 'p'), packetTo("10.66.0.1", 'q'), packetTo("fd00:64::1", 'r')}}
	if diff := cmp.Diff([][]byte{[]byte("pqr")}, readAll(t, g)); diff != "" {
		t.Errorf("after the handshake (-want +got):\n%s", diff)
	}

	// It dies again (its session expires): held again, flushed again.
	peers[1].handshake = now.Add(time.Minute + device.RejectAfterTime)
	flushed = nil
	k.update(peers, now.Add(2*time.Second+device.RejectAfterTime))
	if diff := cmp.Diff([]device.NoisePublicKey{gateKey("dead"), gateKey("expired")}, flushed); diff != "" {
		t.Errorf("flushed when held again (-want +got):\n%s", diff)
	}
}

// TestParseUAPIPeers reads wireguard-go's get answer.
func TestParseUAPIPeers(t *testing.T) {
	a, b := gateKey("a"), gateKey("b")
	text := "private_key=" + hex.EncodeToString(make([]byte, 32)) + "\nlisten_port=51820\n" +
		"public_key=" + hex.EncodeToString(a[:]) + "\nprotocol_version=1\nendpoint=198.18.0.2:51820\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=1\nrx_bytes=2\n" +
		"persistent_keepalive_interval=25\nallowed_ip=10.64.0.0/16\nallowed_ip=fd00::/64\n" +
		"public_key=" + hex.EncodeToString(b[:]) + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n" +
		"allowed_ip=10.65.0.0/16\nerrno=0\n\n"
	want := []gatePeerState{
		{key: a, handshake: time.Unix(1700000000, 5), allowedIPs: prefixes("10.64.0.0/16", "fd00::/64")},
		{key: b, allowedIPs: prefixes("10.65.0.0/16")},
	}
	got := parseUAPIPeers([]byte(text))
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(gatePeerState{}), cmp.Comparer(func(x, y netip.Prefix) bool { return x == y })); diff != "" {
		t.Errorf("peers (-want +got):\n%s", diff)
	}
}

// BenchmarkGatePoll is one poll of the session gate on a device with 1000 peers, none
// with a session: the UAPI get, its parsing and the new table. The gate runs it every
// gatePoll, so its time per op over gatePoll is the CPU share the gate costs.
func BenchmarkGatePoll(b *testing.B) {
	ch := tuntest.NewChannelTUN()
	dev := device.NewDevice(ch.TUN(), bindtest.NewChannelBinds()[0], device.NewLogger(device.LogLevelSilent, ""))
	defer dev.Close()
	var cfg strings.Builder
	for i := range 1000 {
		k := gateKey(fmt.Sprintf("remote-%d", i))
		fmt.Fprintf(&cfg, "public_key=%s\nallowed_ip=10.%d.%d.0/24\n", hex.EncodeToString(k[:]), 64+i>>8, i&255)
	}
	if err := dev.IpcSet(cfg.String()); err != nil {
		b.Fatal(err)
	}
	k := newGateKeeper(newSessionGate(ch.TUN()), nil)
	var buf bytes.Buffer
	for b.Loop() {
		buf.Reset()
		if err := dev.IpcGetOperation(&buf); err != nil {
			b.Fatal(err)
		}
		k.update(parseUAPIPeers(buf.Bytes()), time.Now())
	}
	b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(gatePoll)*100, "%cpu")
}
