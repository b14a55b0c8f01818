package gateway

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// DefaultLivenessPort is the UDP port, on every gateway node's own address, where the
// process serving as the cluster's active gateway answers its standbys, unless the
// AgentConfig names another (gateway.livenessPort).
const DefaultLivenessPort = mcnetv1.DefaultLivenessPort

// Liveness wire format: 4 bytes magic, 1 byte kind.
var livenessMagic = [4]byte{'M', 'C', 'N', 'L'}

// liveness lets standbys tell an active gateway that is slow to renew its Lease (its
// API server is busy or away) from one that is gone. Every gateway process listens on
// the liveness port of its node and answers while it serves as the active gateway;
// a standby asks the Lease holder's node every livenessInterval. The Lease lock
// consults it (see leaseLock): a holder that still answers keeps the Lease even
// when its renewals are late, while a dead one (crash, power-off) answers nothing and
// is replaced as fast as before, since the answer is asked for only when the Lease is
// about to run out.
type liveness struct {
	port     int
	peerPort int // where holders answer: port, except in tests
	// serving says this process runs the cluster's active gateway datapath.
	serving atomic.Bool
	// log, when set, reports failures to answer.
	log func(msg string, err error)

	mu        sync.Mutex
	node      string         // the watched holder
	addr      netip.AddrPort // its liveness address
	lastReply time.Time      // when it last answered
	since     time.Time      // when asking it began
}

const livenessInterval = 100 * time.Millisecond

// livenessWindow is how recent a holder's answer must be to count as alive: a few
// intervals, so one lost datagram does not matter.
const livenessWindow = 350 * time.Millisecond

func newLiveness(port int) *liveness {
	return &liveness{port: port, peerPort: port}
}

// run answers and asks until ctx ends. Without a socket (port taken, 0 disables) it
// returns the error and the gateway works as without liveness: Lease timing alone.
func (l *liveness) run(ctx context.Context) error {
	if l.port == 0 {
		return nil
	}
	pc, err := (&net.ListenConfig{}).ListenPacket(ctx, "udp", net.JoinHostPort("", strconv.Itoa(l.port)))
	if err != nil {
		return err
	}
	conn := pc.(*net.UDPConn)
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	go l.ask(ctx, conn)
	buf := make([]byte, 16)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		if n != 5 || [4]byte(buf[:4]) != livenessMagic {
			continue
		}
		switch buf[4] {
		case kindRequest:
			if l.serving.Load() {
				buf[4] = kindReply
				if _, err := conn.WriteToUDPAddrPort(buf[:5], from); err != nil && l.log != nil {
					l.log("liveness reply to "+from.String()+" failed", err)
				}
			}
		case kindReply:
			l.mu.Lock()
			if l.addr.IsValid() && from.Addr().Unmap() == l.addr.Addr() {
				l.lastReply = time.Now()
			}
			l.mu.Unlock()
		}
	}
}

// ask sends a request to the watched holder every interval.
func (l *liveness) ask(ctx context.Context, conn *net.UDPConn) {
	t := time.NewTicker(livenessInterval)
	defer t.Stop()
	req := append(livenessMagic[:], kindRequest)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l.mu.Lock()
		addr := l.addr
		l.mu.Unlock()
		if addr.IsValid() {
			_, _ = conn.WriteToUDPAddrPort(req, addr)
		}
	}
}

// watch makes node at addr the holder to ask; an empty node stops asking.
func (l *liveness) watch(node string, addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ap := netip.AddrPort{}
	if node != "" && addr.IsValid() {
		ap = netip.AddrPortFrom(addr, uint16(l.peerPort))
	}
	if node != l.node || ap != l.addr {
		l.node, l.addr, l.lastReply, l.since = node, ap, time.Time{}, time.Now()
	}
}

// alive says whether node answered within livenessWindow.
func (l *liveness) alive(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return node != "" && node == l.node && !l.lastReply.IsZero() && now.Sub(l.lastReply) < livenessWindow
}

// reachable says whether the watched holder node answered within d; known is false
// while asking it has gone on for less than d (or there is nothing to ask), when
// nothing can be said yet.
func (l *liveness) reachable(node string, d time.Duration, now time.Time) (reachable, known bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.port == 0 || node == "" || node != l.node || !l.addr.IsValid() {
		return false, false
	}
	if !l.lastReply.IsZero() && now.Sub(l.lastReply) < d {
		return true, true
	}
	return false, now.Sub(l.since) >= d
}

// lastAnswer is when the watched holder last answered, for logs.
func (l *liveness) lastAnswer() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lastReply
}
