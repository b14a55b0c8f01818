package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Endpoint is where a client measures to and as whom.
type Endpoint struct {
	// Target is the server's address and port.
	Target netip.AddrPort
	// Session must match the server's.
	Session string
	// Source is the local address to send from; zero lets the kernel choose.
	Source netip.Addr
}

func (e Endpoint) dialer(network string) *net.Dialer {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if e.Source.IsValid() {
		switch network {
		case "tcp":
			d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(e.Source, 0))
		case "udp":
			d.LocalAddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.Source, 0))
		}
	}
	return d
}

// connectFailed begins the message of a throughput test that could not open a TCP
// connection at all, as opposed to one that reached something.
const connectFailed = "connect to "

// ConnectFailed says whether the message of a failed throughput NetworkTest means the
// target refused or never answered the TCP connection. A target that accepts it but
// does not speak the probe protocol (e.g. an API server) fails with another message,
// so a throughput test is also a TCP reachability check.
func ConnectFailed(message string) bool { return strings.HasPrefix(message, connectFailed) }

// ThroughputResult is what the server received from all streams.
type ThroughputResult struct {
	Bytes    int64
	Duration time.Duration
	Streams  int
}

// BitsPerSecond is the received rate.
func (r ThroughputResult) BitsPerSecond() float64 {
	if r.Duration <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Duration.Seconds()
}

// Throughput sends on streams parallel TCP connections for d and returns what the
// server received, over the longest time a stream took from first to last byte.
func Throughput(ctx context.Context, e Endpoint, streams int, d time.Duration) (ThroughputResult, error) {
	if streams < 1 {
		streams = 1
	}
	conns := make([]net.Conn, 0, streams)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	tag := tagOf(e.Session)
	for range streams {
		c, err := e.dialer("tcp").DialContext(ctx, "tcp", e.Target.String())
		if err != nil {
			return ThroughputResult{}, fmt.Errorf("%s%s: %w", connectFailed, e.Target, err)
		}
		conns = append(conns, c)
		hello := make([]byte, helloLen)
		putHello(hello, kindThroughput, tag)
		if _, err := c.Write(hello); err != nil {
			return ThroughputResult{}, fmt.Errorf("send to %s: %w", e.Target, err)
		}
	}
	deadline := time.Now().Add(d)
	res := ThroughputResult{Streams: streams}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make([]error, streams)
	for i, c := range conns {
		wg.Go(func() {
			n, el, err := sendStream(ctx, c, deadline)
			errs[i] = err
			mu.Lock()
			defer mu.Unlock()
			res.Bytes += n
			res.Duration = max(res.Duration, el)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if res.Bytes == 0 {
		return res, fmt.Errorf("server %s received nothing", e.Target)
	}
	return res, nil
}

// sendStream writes until deadline, closes the sending side and reads the server's
// report of what arrived.
func sendStream(ctx context.Context, c net.Conn, deadline time.Time) (int64, time.Duration, error) {
	buf := make([]byte, 128<<10)
	_ = c.SetWriteDeadline(deadline)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if _, err := c.Write(buf); err != nil {
			if isTimeout(err) {
				break
			}
			return 0, 0, fmt.Errorf("send to %s: %w", c.RemoteAddr(), err)
		}
	}
	if tc, ok := c.(*net.TCPConn); ok {
		if err := tc.CloseWrite(); err != nil {
			return 0, 0, fmt.Errorf("close stream to %s: %w", c.RemoteAddr(), err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	rep := make([]byte, reportLen)
	if _, err := io.ReadFull(c, rep); err != nil {
		return 0, 0, fmt.Errorf("read report from %s: %w", c.RemoteAddr(), err)
	}
	return int64(binary.BigEndian.Uint64(rep)), time.Duration(binary.BigEndian.Uint64(rep[8:])), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// LatencyResult summarises echo round trips.
type LatencyResult struct {
	Sent, Received     int
	Min, Avg, P99, Max time.Duration
}

// LossPercent is the share of echoes without an answer.
func (r LatencyResult) LossPercent() float64 {
	if r.Sent == 0 {
		return 0
	}
	return 100 * float64(r.Sent-r.Received) / float64(r.Sent)
}

// Latency sends count UDP echoes, one per interval, and summarises the round trips of
// those answered. It fails only when none is.
func Latency(ctx context.Context, e Endpoint, count int, interval time.Duration) (LatencyResult, error) {
	c, err := e.dialer("udp").DialContext(ctx, "udp", e.Target.String())
	if err != nil {
		return LatencyResult{}, fmt.Errorf("connect to %s: %w", e.Target, err)
	}
	defer c.Close()
	tag := tagOf(e.Session)
	sent := make([]time.Time, count)
	var mu sync.Mutex
	var rtts []time.Duration
	seen := make(map[uint64]bool, count)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, err := c.Read(buf)
			now := time.Now()
			if err != nil {
				if errors.Is(err, net.ErrClosed) || isTimeout(err) {
					return
				}
				continue // e.g. ECONNREFUSED from an ICMP port unreachable
			}
			seq, err := parseUDP(buf[:n], tag)
			if err != nil || seq >= uint64(count) {
				continue
			}
			mu.Lock()
			if !seen[seq] && !sent[seq].IsZero() {
				seen[seq] = true
				rtts = append(rtts, now.Sub(sent[seq]))
			}
			mu.Unlock()
		}
	}()
	pkt := make([]byte, 64)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	res := LatencyResult{}
	for i := range count {
		putUDP(pkt, tag, uint64(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		_, _ = c.Write(pkt) // a lost send counts as a lost echo
		res.Sent++
		if i == count-1 {
			break
		}
		select {
		case <-ctx.Done():
			c.Close()
			<-done
			return res, ctx.Err()
		case <-tick.C:
		}
	}
	// Stragglers: wait up to a second, or three times the slowest answer so far.
	mu.Lock()
	wait := time.Second
	for _, r := range rtts {
		wait = max(wait, 3*r)
	}
	mu.Unlock()
	_ = c.SetReadDeadline(time.Now().Add(min(wait, 5*time.Second)))
	<-done
	mu.Lock()
	defer mu.Unlock()
	res.Received = len(rtts)
	if len(rtts) == 0 {
		return res, fmt.Errorf("no answer to %d UDP echoes from %s", res.Sent, e.Target)
	}
	summarise(&res, rtts)
	return res, nil
}

func summarise(res *LatencyResult, rtts []time.Duration) {
	slices.Sort(rtts)
	var sum time.Duration
	for _, r := range rtts {
		sum += r
	}
	res.Min, res.Max = rtts[0], rtts[len(rtts)-1]
	res.Avg = sum / time.Duration(len(rtts))
	// Nearest-rank percentile.
	rank := int(math.Ceil(0.99*float64(len(rtts)))) - 1
	res.P99 = rtts[max(rank, 0)]
}

// MTUResult is the largest IP packet that crossed the path unfragmented.
type MTUResult struct {
	PathMTU      int
	InterfaceMTU int
	Interface    string
}

// PathMTU searches the largest packet (IP header included) that reaches the server
// with the don't-fragment bit set, between the IP minimum and the MTU of the local
// interface toward the target. Packets are sent with DF but ignoring the kernel's
// cached path MTU, so the search sees the path as it is now.
func PathMTU(ctx context.Context, e Endpoint) (MTUResult, error) {
	ifName, ifMTU, err := RouteMTU(e.Target.Addr(), e.Source)
	if err != nil {
		return MTUResult{}, err
	}
	res := MTUResult{InterfaceMTU: ifMTU, Interface: ifName}
	d := e.dialer("udp")
	d.Control = func(network, _ string, rc syscall.RawConn) error { return setProbeDF(network, rc) }
	c, err := d.DialContext(ctx, "udp", e.Target.String())
	if err != nil {
		return res, fmt.Errorf("connect to %s: %w", e.Target, err)
	}
	defer c.Close()
	overhead := 20 + 8
	lo := 576
	if e.Target.Addr().Is6() && !e.Target.Addr().Is4In6() {
		overhead, lo = 40+8, 1280
	}
	p := &mtuProber{c: c, tag: tagOf(e.Session), overhead: overhead}
	if ok, err := p.try(ctx, lo); err != nil {
		return res, err
	} else if !ok {
		return res, fmt.Errorf("no answer from %s even to %d-byte packets", e.Target, lo)
	}
	hi := max(ifMTU, lo)
	if ok, err := p.try(ctx, hi); err != nil {
		return res, err
	} else if ok {
		res.PathMTU = hi
		return res, nil
	}
	// Invariant: lo passes, hi does not.
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		ok, err := p.try(ctx, mid)
		if err != nil {
			return res, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	res.PathMTU = lo
	return res, nil
}

type mtuProber struct {
	c        net.Conn
	tag      sessionTag
	overhead int
	seq      uint64
}

// try sends a packet of size bytes (IP header included) up to three times and
// reports whether it was answered.
func (p *mtuProber) try(ctx context.Context, size int) (bool, error) {
	pkt := make([]byte, size-p.overhead)
	buf := make([]byte, 2048)
	for range 3 {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		p.seq++
		putUDP(pkt, p.tag, p.seq)
		_, err := p.c.Write(pkt)
		if errors.Is(err, syscall.EMSGSIZE) {
			// The kernel also reports an earlier packet's EMSGSIZE on the next send;
			// only a second one in a row is about this packet.
			_, err = p.c.Write(pkt)
			if errors.Is(err, syscall.EMSGSIZE) {
				return false, nil // larger than the local MTU
			}
		}
		if err != nil {
			continue
		}
		deadline := time.Now().Add(300 * time.Millisecond)
		_ = p.c.SetReadDeadline(deadline)
		for time.Now().Before(deadline) {
			n, err := p.c.Read(buf)
			if err != nil {
				if isTimeout(err) {
					break
				}
				continue
			}
			if seq, err := parseUDP(buf[:n], p.tag); err == nil && seq == p.seq {
				return true, nil
			}
		}
	}
	return false, nil
}

// RouteMTU returns the MTU of the kernel's route to dst (from src when given) and the
// local interface it leaves by when that can be told, else "". Connecting a UDP socket
// sends nothing. The route's MTU is asked of the socket (IP_MTU on Linux): the
// interface holding the source address is not necessarily the one the route uses — a
// gateway's health-check IP lives on the intra-cluster VXLAN while its routes to other
// clusters go through the cable.
func RouteMTU(dst, src netip.Addr) (string, int, error) {
	var laddr *net.UDPAddr
	if src.IsValid() {
		laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	c, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
	if err != nil {
		return "", 0, fmt.Errorf("no route to %s: %w", dst, err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	routeMTU, known := socketMTU(c, dst.Is6() && !dst.Is4In6())
	ifs, err := net.Interfaces()
	if err != nil {
		return "", 0, fmt.Errorf("list interfaces: %w", err)
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			p, err := netip.ParsePrefix(a.String())
			if err != nil || p.Addr().Unmap() != local {
				continue
			}
			switch {
			case !known:
				return ifc.Name, ifc.MTU, nil
			case min(ifc.MTU, 0xffff) == routeMTU: // an IP packet has at most 65535 bytes (lo: 65536)
				return ifc.Name, routeMTU, nil
			default:
				return "", routeMTU, nil // leaves by another interface than its source's
			}
		}
	}
	if known {
		return "", routeMTU, nil
	}
	return "", 0, fmt.Errorf("no interface holds %s, the source toward %s", local, dst)
}
