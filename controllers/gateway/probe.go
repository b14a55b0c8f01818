package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Gateways answer health probes on the AgentConfig's gateway.healthCheckPort, at their
// health-check address inside their cluster's pod CIDR. Probes and replies travel
// through the cables like pod traffic, so a reply proves the datapath works.

// Probe wire format: 4 bytes magic, 1 byte kind, 8 bytes sequence number (for a
// restart announcement, the hold in milliseconds).
var probeMagic = [4]byte{'M', 'C', 'N', 'P'}

const (
	kindRequest = 1
	kindReply   = 2
	// kindRestarting is a gateway's announcement, sent to every remote gateway it
	// probes as it stops for a restart whose cables stay in the kernel: "my next
	// process answers within the hold". Gateways that predate it ignore it.
	kindRestarting = 3
	probeLen       = 13
)

// MaxRestartHold bounds how long a remote's restart announcement keeps its
// connection from being judged down, whatever hold it asks for.
const MaxRestartHold = 30 * time.Second

// prober probes every target through a UDP socket bound to the local health-check
// address and answers the probes of remote gateways on the same socket. The socket
// binds with IP_FREEBIND, so it can be opened before the address exists (it appears
// when the node becomes the active gateway).
//
// A healthy target gets one probe per interval. A target whose latest probe is late
// (unanswered after a quarter interval, or twice its average RTT), whose last probe was
// lost, or that never answered is probed every quarter interval instead. A target is
// judged down once it has been silent for DeadAfter (LostProbesForError intervals)
// with LostProbesForError probes lost in a row: a gateway that dies is reported two to
// three intervals later, and a lost packet or two do not make the connection flap.
//
// A container restart takes longer than that: the kubelet notices the exit within a
// second (its PLEG relist), restarts a container that exited before only after its
// crash-loop back-off (whatever the exit code: 1 s to 5 min, 2 s in the lab), then the
// new process starts. A gateway that stops for such a restart, with cables that stay
// in the kernel, announces it to every target from its probe socket (kindRestarting,
// through the cables like any probe), and each remote holds the connection for the
// hold announced, at most MaxRestartHold, or until the next reply. Only a target
// that answered within DeadAfter can announce, so a silent one cannot extend its
// hold.
//
// run drives it on its own goroutine and timer, a tick every quarter interval, apart
// from the gateway's reconciles: a probe is timestamped as it leaves, so its RTT is what
// the wire saw, never the time a reconcile spent publishing or applying first. The
// reconciles only set the targets and read the stats; changed tells them when a probe
// was judged lost or a silent target answered again, so a connection's status follows
// at once.
type prober struct {
	interval, fast, timeout, deadAfter time.Duration
	// changed, when set, is called (without the lock held) after a loss is recorded
	// or a target that was failing answers.
	changed func()

	mu      sync.Mutex
	conn    *net.UDPConn
	addr    netip.AddrPort
	seq     uint64
	pending map[uint64]pendingProbe
	targets map[string]*target
	// startHeld are the clusters held from startFrom to startUntil once they become
	// targets (holdOnStart).
	startHeld             map[string]bool
	startFrom, startUntil time.Time
}

// target is one probed gateway.
type target struct {
	to netip.AddrPort
	// since is when probing this address began (the first send); zero before.
	since time.Time
	// lastSent is when the latest probe went.
	lastSent time.Time
	// lastReply is when the most recent answered probe was sent.
	lastReply time.Time
	// holdFrom and holdUntil are when the target announced a restart and when the
	// hold ends; zero without one, and reset by the reply to a probe sent after it.
	holdFrom, holdUntil time.Time
	// ownRestart says the hold is this process's own start after a restart
	// (holdOnStart), not the target's announcement.
	ownRestart bool
	results    []ProbeResult // at most Window
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

// newProber probes each healthy target every interval. A probe still unanswered
// seven eighths of an interval later is lost (875 ms at the default second: far above
// any RTT between regions), so it is judged at the tick before the next probe.
func newProber(interval time.Duration) *prober {
	return &prober{
		interval: interval, fast: interval / 4, timeout: interval - interval/8,
		deadAfter: LostProbesForError * interval,
		pending:   map[uint64]pendingProbe{}, targets: map[string]*target{},
	}
}

// checkInterval is how often tick must run.
func (p *prober) checkInterval() time.Duration { return p.fast }

// run ticks the prober every check interval until ctx ends, each tick with the time
// the probes leave.
func (p *prober) run(ctx context.Context) {
	t := time.NewTicker(p.fast)
	defer t.Stop()
	for {
		if p.tick(time.Now()) && p.changed != nil {
			p.changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
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
			if p.reply(seq, from, time.Now()) && p.changed != nil {
				p.changed()
			}
		case kindRestarting:
			p.restarting(from, time.Duration(min(seq, uint64(MaxRestartHold/time.Millisecond)))*time.Millisecond, time.Now())
		}
	}
}

// restarting records the restart announcement of the target at from, asking to be
// held for hold from now: honoured when it answered a probe within DeadAfter (it was
// alive when it announced), for at most MaxRestartHold.
func (p *prober) restarting(from netip.AddrPort, hold time.Duration, now time.Time) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.targets {
		if t.to == from && !t.lastReply.IsZero() && now.Sub(t.lastReply) < p.deadAfter && hold > 0 {
			t.holdFrom, t.holdUntil, t.ownRestart = now, now.Add(min(hold, MaxRestartHold)), false
		}
	}
}

// announceRestart tells the gateways at to that this one stops for a restart and
// its next process answers within hold (see prober), then closes the socket: every
// answer after the announcement comes from the next process. Each is sent twice, in
// case one is lost; they leave from the probe socket, so through the cables.
func (p *prober) announceRestart(to []netip.AddrPort, hold time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil || hold <= 0 || len(to) == 0 {
		return
	}
	var buf [probeLen]byte
	copy(buf[:], probeMagic[:])
	buf[4] = kindRestarting
	binary.BigEndian.PutUint64(buf[5:], uint64(hold/time.Millisecond))
	for range 2 {
		for _, a := range to {
			_, _ = p.conn.WriteToUDPAddrPort(buf[:], a)
		}
	}
	p.conn.Close()
	p.conn = nil
}

// targetAddrs returns the probed address of each of clusters that is a target.
func (p *prober) targetAddrs(clusters []string) []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.AddrPort
	for _, c := range clusters {
		if t := p.targets[c]; t != nil {
			out = append(out, t.to)
		}
	}
	return out
}

// reply records the answer to probe seq, received at now; it reports whether the
// target was failing (never answered, or its last probe lost) until then.
func (p *prober) reply(seq uint64, from netip.AddrPort, now time.Time) (recovered bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pp, ok := p.pending[seq]
	if !ok || pp.to.Addr() != from.Addr().Unmap() {
		return false
	}
	delete(p.pending, seq)
	if t := p.targets[pp.cluster]; t != nil && t.to == pp.to {
		s := Summarise(t.results)
		recovered = s.Sent == s.Lost || s.ConsecutiveLost > 0
		t.record(ProbeResult{Sent: pp.sent, RTT: now.Sub(pp.sent)})
		if pp.sent.After(t.lastReply) {
			t.lastReply = pp.sent
		}
		// A probe sent after the announcement was answered by the next process: back
		// from the restart, the hold has done its job.
		if !t.holdUntil.IsZero() && pp.sent.After(t.holdFrom) {
			recovered = true
			t.holdFrom, t.holdUntil, t.ownRestart = time.Time{}, time.Time{}, false
		}
	}
	return recovered
}

func (t *target) record(r ProbeResult) {
	// Keep sending order: a reply can complete a probe sent before one already lost.
	i := len(t.results)
	for i > 0 && t.results[i-1].Sent.After(r.Sent) {
		i--
	}
	t.results = slices.Insert(t.results, i, r)
	if len(t.results) > Window {
		t.results = t.results[len(t.results)-Window:]
	}
}

// setTargets replaces the probed gateways; results of removed or moved ones go.
func (p *prober) setTargets(targets map[string]netip.AddrPort) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c, t := range p.targets {
		if to, ok := targets[c]; !ok || to != t.to {
			delete(p.targets, c)
		}
	}
	for c, to := range targets {
		if _, ok := p.targets[c]; !ok {
			t := &target{to: to}
			if p.startHeld[c] {
				t.holdFrom, t.holdUntil, t.ownRestart = p.startFrom, p.startUntil, true
				delete(p.startHeld, c)
			}
			p.targets[c] = t
		}
	}
}

// holdOnStart holds clusters, once they become targets, as if each had announced at
// from a restart of hold (at most MaxRestartHold): a process that starts after a
// restart of its own cannot have heard announcements made while it was down. The
// first reply to a probe of this process ends a hold, as for an announced one.
func (p *prober) holdOnStart(from time.Time, hold time.Duration, clusters []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.startFrom, p.startUntil = from, from.Add(min(hold, MaxRestartHold))
	p.startHeld = map[string]bool{}
	for _, c := range clusters {
		p.startHeld[c] = true
	}
}

// tick judges overdue probes lost and sends the probes that are due, stamped now: the
// caller passes the time they leave. It reports whether it recorded a loss.
func (p *prober) tick(now time.Time) (lost bool) {
	p.mu.Lock()
	for seq, pp := range p.pending {
		if p.overdue(pp, now) {
			delete(p.pending, seq)
			if t := p.targets[pp.cluster]; t != nil && t.to == pp.to {
				t.record(ProbeResult{Sent: pp.sent, Lost: true})
				lost = true
			}
		}
	}
	type send struct {
		seq uint64
		to  netip.AddrPort
	}
	var sends []send
	for c, t := range p.targets {
		if !p.dueLocked(c, t, now) {
			continue
		}
		if t.since.IsZero() {
			t.since = now
		}
		p.seq++
		p.pending[p.seq] = pendingProbe{cluster: c, to: t.to, sent: now}
		t.lastSent = now
		sends = append(sends, send{p.seq, t.to})
	}
	conn := p.conn
	p.mu.Unlock()
	if conn == nil {
		return lost // judged lost later: nothing can be sent without the socket
	}
	var buf [probeLen]byte
	copy(buf[:], probeMagic[:])
	buf[4] = kindRequest
	for _, s := range sends {
		binary.BigEndian.PutUint64(buf[5:], s.seq)
		// A send error (no route yet) shows up as a lost probe.
		_, _ = conn.WriteToUDPAddrPort(buf[:], s.to)
	}
	return lost
}

// dueLocked says whether target c gets a probe at now.
func (p *prober) dueLocked(c string, t *target, now time.Time) bool {
	if t.lastSent.IsZero() {
		return true
	}
	// Ticks come every p.fast, give or take scheduling: a probe due within half a
	// tick goes now rather than a whole tick late.
	since := now.Sub(t.lastSent) + p.fast/2
	if since >= p.interval {
		return true
	}
	return since >= p.fast && p.suspectLocked(c, t, now)
}

// suspectLocked says whether target c may be down: it never answered, its last
// probe was lost, or a probe to it is late.
func (p *prober) suspectLocked(c string, t *target, now time.Time) bool {
	s := Summarise(t.results)
	if s.Sent == s.Lost || s.ConsecutiveLost > 0 {
		return true
	}
	late := max(p.fast, 2*s.Avg)
	for _, pp := range p.pending {
		if pp.cluster == c && pp.to == t.to && now.Sub(pp.sent) >= late {
			return true
		}
	}
	return false
}

// overdue says whether pp is to be judged lost at now.
func (p *prober) overdue(pp pendingProbe, now time.Time) bool { return now.Sub(pp.sent) >= p.timeout }

// stats returns the statistics of every probed cluster at now.
func (p *prober) stats(now time.Time) map[string]ProbeStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]ProbeStats{}
	for c, t := range p.targets {
		s := Summarise(t.results)
		s.DeadAfter = p.deadAfter
		if now.Before(t.holdUntil) {
			s.RestartingUntil, s.OwnRestart = t.holdUntil, t.ownRestart
		}
		switch {
		case !t.lastReply.IsZero():
			s.Silence = now.Sub(t.lastReply)
		case !t.since.IsZero():
			s.Silence = now.Sub(t.since)
		}
		out[c] = s
	}
	return out
}
