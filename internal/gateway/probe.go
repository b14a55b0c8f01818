package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultHealthCheckPort is the UDP port gateways answer health probes on, at their
// health-check address inside their cluster's pod CIDR. Probes and replies travel
// through the cables like pod traffic, so a reply proves the datapath works.
const DefaultHealthCheckPort = 4801

// Probe wire format: 4 bytes magic, 1 byte kind, 8 bytes sequence number.
var probeMagic = [4]byte{'M', 'C', 'N', 'P'}

const (
	kindRequest = 1
	kindReply   = 2
	probeLen    = 13
)

// Window is how many recent probes the statistics cover.
const Window = 10

// ProbeResult is one probe: its RTT when answered, Lost when it timed out.
type ProbeResult struct {
	Sent time.Time
	RTT  time.Duration
	Lost bool
}

// ProbeStats summarise a window of probe results.
type ProbeStats struct {
	// Sent is the number of completed probes in the window (answered or lost).
	Sent int
	// Lost counts unanswered ones; LossPercent is their share.
	Lost        int
	LossPercent int32
	// Last, Min, Avg, Max, StdDev are over answered probes; zero without any.
	Last, Min, Avg, Max, StdDev time.Duration
	// ConsecutiveLost counts the lost probes since the last reply.
	ConsecutiveLost int
	// LastReply is when the most recent answered probe was sent; zero if none.
	LastReply time.Time
}

// Summarise computes ProbeStats of results in sending order.
func Summarise(results []ProbeResult) ProbeStats {
	var s ProbeStats
	var sum, sumSq float64
	n := 0
	for _, r := range results {
		s.Sent++
		if r.Lost {
			s.Lost++
			s.ConsecutiveLost++
			continue
		}
		s.ConsecutiveLost = 0
		s.LastReply = r.Sent
		s.Last = r.RTT
		if n == 0 || r.RTT < s.Min {
			s.Min = r.RTT
		}
		s.Max = max(s.Max, r.RTT)
		n++
		sum += float64(r.RTT)
		sumSq += float64(r.RTT) * float64(r.RTT)
	}
	if s.Sent > 0 {
		s.LossPercent = int32(100 * s.Lost / s.Sent)
	}
	if n > 0 {
		mean := sum / float64(n)
		s.Avg = time.Duration(mean)
		s.StdDev = time.Duration(math.Sqrt(max(0, sumSq/float64(n)-mean*mean)))
	}
	return s
}

// prober sends one probe a second to each target through a UDP socket bound to the
// local health-check address and answers the probes of remote gateways on the same
// socket. The socket binds with IP_FREEBIND, so it can be opened before the address
// exists (it appears when the node becomes the active gateway).
type prober struct {
	timeout time.Duration

	mu      sync.Mutex
	conn    *net.UDPConn
	addr    netip.AddrPort
	seq     uint64
	pending map[uint64]pendingProbe
	results map[string][]ProbeResult // by cluster, at most Window each
	targets map[string]netip.AddrPort
}

type pendingProbe struct {
	cluster string
	to      netip.AddrPort
	sent    time.Time
}

// listenProbe opens the probe socket on addr.
func listenProbe(ctx context.Context, addr netip.AddrPort) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(addr.Addr().String(), strconv.Itoa(int(addr.Port()))))
	if err != nil {
		return nil, err
	}
	return pc.(*net.UDPConn), nil
}

func newProber(timeout time.Duration) *prober {
	return &prober{timeout: timeout, pending: map[uint64]pendingProbe{}, results: map[string][]ProbeResult{}, targets: map[string]netip.AddrPort{}}
}

// listen (re)opens the socket on addr, the local health-check address: probes must
// leave from it, since only the cluster's CIDRs are routed through the cables and
// allowed by the remote WireGuard peer.
func (p *prober) listen(ctx context.Context, addr netip.AddrPort) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil && p.addr == addr {
		return nil
	}
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
	conn, err := listenProbe(ctx, addr)
	if err != nil {
		return fmt.Errorf("health-check socket on %s: %w", addr, err)
	}
	p.conn, p.addr = conn, addr
	go p.serve(conn)
	return nil
}

// close closes the socket.
func (p *prober) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn != nil {
		p.conn.Close()
		p.conn = nil
	}
}

// serve answers requests and records replies until the socket closes.
func (p *prober) serve(conn *net.UDPConn) {
	buf := make([]byte, 64)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n != probeLen || [4]byte(buf[:4]) != probeMagic {
			continue
		}
		seq := binary.BigEndian.Uint64(buf[5:13])
		switch buf[4] {
		case kindRequest:
			buf[4] = kindReply
			_, _ = conn.WriteToUDPAddrPort(buf[:probeLen], from)
		case kindReply:
			p.reply(seq, from, time.Now())
		}
	}
}

func (p *prober) reply(seq uint64, from netip.AddrPort, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp, ok := p.pending[seq]
	if !ok || pp.to.Addr() != from.Addr().Unmap() {
		return
	}
	delete(p.pending, seq)
	p.record(pp.cluster, ProbeResult{Sent: pp.sent, RTT: now.Sub(pp.sent)})
}

func (p *prober) record(cluster string, r ProbeResult) {
	rs := append(p.results[cluster], r)
	if len(rs) > Window {
		rs = rs[len(rs)-Window:]
	}
	p.results[cluster] = rs
}

// setTargets replaces the probed gateways; results of removed or moved ones go.
func (p *prober) setTargets(targets map[string]netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, old := range p.targets {
		if t, ok := targets[c]; !ok || t != old {
			delete(p.results, c)
		}
	}
	p.targets = targets
}

// tick expires overdue probes and sends a new one to every target.
func (p *prober) tick(now time.Time) {
	p.mu.Lock()
	for seq, pp := range p.pending {
		if now.Sub(pp.sent) >= p.timeout {
			delete(p.pending, seq)
			if p.targets[pp.cluster] == pp.to {
				p.record(pp.cluster, ProbeResult{Sent: pp.sent, Lost: true})
			}
		}
	}
	type send struct {
		seq uint64
		to  netip.AddrPort
	}
	var sends []send
	for c, to := range p.targets {
		p.seq++
		p.pending[p.seq] = pendingProbe{cluster: c, to: to, sent: now}
		sends = append(sends, send{p.seq, to})
	}
	conn := p.conn
	p.mu.Unlock()
	if conn == nil {
		return // judged lost next tick: nothing can be sent without the socket
	}
	var buf [probeLen]byte
	copy(buf[:], probeMagic[:])
	buf[4] = kindRequest
	for _, s := range sends {
		binary.BigEndian.PutUint64(buf[5:], s.seq)
		// A send error (no route yet) shows up as a lost probe.
		_, _ = conn.WriteToUDPAddrPort(buf[:], s.to)
	}
}

// stats returns the statistics of every probed cluster.
func (p *prober) stats() map[string]ProbeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]ProbeStats{}
	for c := range p.targets {
		out[c] = Summarise(p.results[c])
	}
	return out
}
