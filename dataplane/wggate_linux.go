package dataplane

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
)

// A userspace WireGuard peer without a session costs about 8 MiB. wireguard-go stages
// the packets it reads for a peer until a handshake completes, up to QueueStagedSize
// (conn.IdealBatchSize, 128 on Linux) batches, each packet in its own MaxMessageSize
// (64 KiB) buffer (wireguard-go device/send.go StagePackets; device/queueconstants_*.go).
// A remote gateway that never answers - a dead cluster, a member that has not come up -
// keeps its queue full for as long as anything sends to it, and the prober sends to
// every remote several times a second: 1000 dead remotes pinned 8 GiB.
//
// mcnet owns the TUN it hands wireguard-go, so it stops the packets before they are
// staged. sessionGate sits between the TUN and the device and drops packets whose peer
// has no session (no handshake within RejectAfterTime: exactly when wireguard-go would
// stage rather than send), except one packet per gateRetryAfter per peer. The peer
// keeps trying to reach its remote all the same: wireguard-go retransmits an initiation
// every RekeyTimeout (5 s) for RekeyAttemptTime (90 s) after each trigger, and the
// persistent keepalive (or the one packet let through) triggers it again; a remote
// that comes back initiates itself as soon as it is configured. Once a handshake
// completes the next poll (gatePoll) lets the peer's packets through again. Only the
// userspace device needs this: the kernel module stages at most a queue of real skbs.

const (
	// gatePoll is how often the gate re-reads the peers' handshake times: the delay,
	// at most, between a completed handshake and the peer's packets passing again.
	gatePoll = 500 * time.Millisecond
	// gateRetryAfter is how often one packet of a held peer still reaches
	// wireguard-go. It exceeds RekeyAttemptTime (plus the retransmit jitter), after
	// which wireguard-go flushes what it staged, so a held peer never holds more than
	// a packet or two (device/timers.go expiredRetransmitHandshake).
	gateRetryAfter = device.RekeyAttemptTime + 2*device.RekeyTimeout
)

// sessionGate is the tun.Device wireguard-go reads from; see the comment above.
type sessionGate struct {
	tun.Device
	// held is the table of the latest poll; nil while every peer has a session, so
	// the data path then costs one atomic load per read.
	held atomic.Pointer[gateTable]
}

// gateTable routes a destination to its peer the way wireguard-go does (longest
// matching allowed IP), so a held peer's prefix never hides a live peer's longer one.
type gateTable struct {
	lens4, lens6 []int // distinct prefix lengths, longest first
	byPrefix     map[netip.Prefix]*gatePeer
}

// gatePeer is one peer of a table.
type gatePeer struct {
	held bool
	// lastPass is when a packet of this peer last went through while held (Unix
	// nanoseconds); shared by the successive tables of the same peer.
	lastPass *atomic.Int64
}

func newSessionGate(t tun.Device) *sessionGate { return &sessionGate{Device: t} }

// Read reads from the TUN and removes the packets of held peers, moving the kept ones
// to the front (bufs are the device's own equally sized buffers). It only returns
// with nothing when the TUN failed, so the caller sees a read as before.
func (g *sessionGate) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := g.Device.Read(bufs, sizes, offset)
		t := g.held.Load()
		if t == nil || n == 0 {
			return n, err
		}
		now := time.Now().UnixNano()
		kept := 0
		for i := range n {
			if t.drop(bufs[i][offset:offset+sizes[i]], now) {
				continue
			}
			if kept != i {
				copy(bufs[kept][offset:], bufs[i][offset:offset+sizes[i]])
				sizes[kept] = sizes[i]
			}
			kept++
		}
		if kept > 0 || err != nil {
			return kept, err
		}
	}
}

// drop says whether packet (an IP packet) is for a held peer and must not reach
// wireguard-go; it lets one through per gateRetryAfter.
func (t *gateTable) drop(packet []byte, now int64) bool {
	p := t.lookup(packet)
	if p == nil || !p.held {
		return false
	}
	last := p.lastPass.Load()
	if now-last < int64(gateRetryAfter) {
		return true
	}
	return !p.lastPass.CompareAndSwap(last, now)
}

// lookup returns the peer whose allowed IPs hold the packet's destination, nil if none.
func (t *gateTable) lookup(packet []byte) *gatePeer {
	var dst netip.Addr
	var lens []int
	switch {
	case len(packet) >= 20 && packet[0]>>4 == 4:
		dst, lens = netip.AddrFrom4([4]byte(packet[16:20])), t.lens4
	case len(packet) >= 40 && packet[0]>>4 == 6:
		dst, lens = netip.AddrFrom16([16]byte(packet[24:40])), t.lens6
	default:
		return nil
	}
	for _, l := range lens {
		pfx, _ := dst.Prefix(l)
		if p, ok := t.byPrefix[pfx]; ok {
			return p
		}
	}
	return nil
}

// gatePeerState is what a poll reads of one peer.
type gatePeerState struct {
	key        device.NoisePublicKey
	handshake  time.Time
	allowedIPs []netip.Prefix
}

// parseUAPIPeers reads the peers out of a UAPI get answer (wireguard-go's own text
// protocol, https://www.wireguard.com/xplatform/#configuration-protocol).
func parseUAPIPeers(b []byte) []gatePeerState {
	var peers []gatePeerState
	var sec, nsec int64
	var cur *gatePeerState
	finish := func() {
		if cur != nil && (sec != 0 || nsec != 0) {
			cur.handshake = time.Unix(sec, nsec)
		}
	}
	s := bufio.NewScanner(bytes.NewReader(b))
	for s.Scan() {
		k, v, ok := bytes.Cut(s.Bytes(), []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "public_key":
			finish()
			peers = append(peers, gatePeerState{})
			cur, sec, nsec = &peers[len(peers)-1], 0, 0
			if _, err := hex.Decode(cur.key[:], v); err != nil {
				peers, cur = peers[:len(peers)-1], nil
			}
		case "last_handshake_time_sec":
			sec, _ = strconv.ParseInt(string(v), 10, 64)
		case "last_handshake_time_nsec":
			nsec, _ = strconv.ParseInt(string(v), 10, 64)
		case "allowed_ip":
			if p, err := netip.ParsePrefix(string(v)); err == nil && cur != nil {
				cur.allowedIPs = append(cur.allowedIPs, p.Masked())
			}
		}
	}
	finish()
	return peers
}

// gateKeeper polls a device and keeps its gate's table current.
type gateKeeper struct {
	gate *sessionGate
	// flush empties a peer's staged packets when it becomes held.
	flush func(device.NoisePublicKey)
	// lastPass and held survive from poll to poll, by peer key.
	lastPass map[device.NoisePublicKey]*atomic.Int64
	held     map[device.NoisePublicKey]bool
}

func newGateKeeper(g *sessionGate, flush func(device.NoisePublicKey)) *gateKeeper {
	return &gateKeeper{gate: g, flush: flush, lastPass: map[device.NoisePublicKey]*atomic.Int64{}, held: map[device.NoisePublicKey]bool{}}
}

// update installs the table for peers as read at now: a peer is held when it has no
// handshake within RejectAfterTime. Peers that just became held have their staged
// packets flushed, so what piled up before this poll does not stay pinned either.
func (k *gateKeeper) update(peers []gatePeerState, now time.Time) {
	t := &gateTable{byPrefix: map[netip.Prefix]*gatePeer{}}
	anyHeld := false
	seen := map[device.NoisePublicKey]bool{}
	for _, p := range peers {
		seen[p.key] = true
		held := p.handshake.IsZero() || now.Sub(p.handshake) >= device.RejectAfterTime
		if held && !k.held[p.key] && k.flush != nil {
			k.flush(p.key)
		}
		if !held {
			delete(k.held, p.key)
			delete(k.lastPass, p.key)
		} else {
			k.held[p.key] = true
			anyHeld = true
		}
		lp := k.lastPass[p.key]
		if lp == nil {
			lp = new(atomic.Int64)
			if held {
				k.lastPass[p.key] = lp
			}
		}
		gp := &gatePeer{held: held, lastPass: lp}
		for _, pfx := range p.allowedIPs {
			t.byPrefix[pfx] = gp
			if pfx.Addr().Is4() {
				t.lens4 = append(t.lens4, pfx.Bits())
			} else {
				t.lens6 = append(t.lens6, pfx.Bits())
			}
		}
	}
	for key := range k.held {
		if !seen[key] {
			delete(k.held, key)
			delete(k.lastPass, key)
		}
	}
	if !anyHeld {
		k.gate.held.Store(nil)
		return
	}
	for _, lens := range []*[]int{&t.lens4, &t.lens6} {
		slices.Sort(*lens)
		slices.Reverse(*lens)
		*lens = slices.Compact(*lens)
	}
	k.gate.held.Store(t)
}

// run polls dev every gatePoll until stop is closed.
func (k *gateKeeper) run(dev *device.Device, stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	tick := time.NewTicker(gatePoll)
	defer tick.Stop()
	var buf bytes.Buffer
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		buf.Reset()
		if err := dev.IpcGetOperation(&buf); err != nil {
			continue // the device is closing
		}
		k.update(parseUAPIPeers(buf.Bytes()), time.Now())
	}
}
