package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Server answers throughput streams and UDP echoes of one session on one port.
type Server struct {
	tag sessionTag
	tcp net.Listener
	udp []net.PacketConn
	wg  sync.WaitGroup
}

// Listen opens a server on addr ("host:port"; port 0 picks a free one for TCP and uses
// the same number for UDP).
func Listen(ctx context.Context, addr, session string) (*Server, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("probe server address %q: %w", addr, err)
	}
	var lc net.ListenConfig
	// A free TCP port may be taken for UDP; try a few.
	for range 10 {
		tcp, err := lc.Listen(ctx, "tcp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
		}
		p := tcp.Addr().(*net.TCPAddr).Port
		udp, err := listenUDP(ctx, &lc, host, p)
		if err != nil {
			tcp.Close()
			if port != "0" {
				return nil, fmt.Errorf("listen udp %s: %w", addr, err)
			}
			continue
		}
		s := &Server{tag: tagOf(session), tcp: tcp, udp: udp}
		s.wg.Go(s.acceptLoop)
		for _, pc := range udp {
			s.wg.Go(func() { s.echoLoop(pc) })
		}
		return s, nil
	}
	return nil, fmt.Errorf("listen %s: no port free for both TCP and UDP", addr)
}

// listenUDP opens the echo sockets on host and port. A wildcard host gets one socket
// per address family so that each can learn the destination address of every request
// (IP_PKTINFO, IPV6_RECVPKTINFO) and answer from it: left to itself the kernel picks
// the source by route, e.g. the node's own address for a request sent to a gateway's
// health-check IP. Such an answer is dropped: only cluster CIDRs pass the tunnels
// (WireGuard allowed IPs, mcnet's iptables rules), and the client's connected socket
// accepts answers only from the address it sent to.
// IPv6 is optional on a wildcard host; a node without it still serves IPv4.
func listenUDP(ctx context.Context, lc *net.ListenConfig, host string, port int) ([]net.PacketConn, error) {
	ip, err := netip.ParseAddr(host)
	if host != "" && err != nil {
		return nil, fmt.Errorf("address %q is not an IP address", host)
	}
	if host != "" && !ip.IsUnspecified() {
		pc, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return nil, err
		}
		return []net.PacketConn{pc}, nil
	}
	pc4, err := lc.ListenPacket(ctx, "udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
	if err != nil {
		return nil, err
	}
	pc6, err := lc.ListenPacket(ctx, "udp6", net.JoinHostPort("::", strconv.Itoa(port)))
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		pc4.Close()
		return nil, err
	case err != nil:
		return []net.PacketConn{pc4}, nil // no IPv6 here
	}
	return []net.PacketConn{pc4, pc6}, nil
}

// Port is the TCP and UDP port the server listens on.
func (s *Server) Port() int { return s.tcp.Addr().(*net.TCPAddr).Port }

// Close stops the server and waits for its goroutines.
func (s *Server) Close() error {
	errs := []error{s.tcp.Close()}
	for _, pc := range s.udp {
		errs = append(errs, pc.Close())
	}
	s.wg.Wait()
	err := errors.Join(errs...)
	return err
}

func (s *Server) acceptLoop() {
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := s.tcp.Accept()
		if err != nil {
			return
		}
		conns.Go(func() { s.serveStream(c) })
	}
}

// serveStream counts what one throughput stream sends until the client closes its
// side, then reports the count and the time from first to last byte.
func (s *Server) serveStream(c net.Conn) {
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hello := make([]byte, helloLen)
	if _, err := io.ReadFull(c, hello); err != nil {
		return
	}
	if kind, err := checkHello(hello, s.tag); err != nil || kind != kindThroughput {
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	buf := make([]byte, 256<<10)
	var n int64
	var first time.Time
	for {
		// A stream that stalls for a minute is abandoned.
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		m, err := c.Read(buf)
		if m > 0 && first.IsZero() {
			first = time.Now()
		}
		n += int64(m)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			break
		}
	}
	var elapsed time.Duration
	if !first.IsZero() {
		elapsed = time.Since(first)
	}
	rep := make([]byte, reportLen)
	binary.BigEndian.PutUint64(rep, uint64(n))
	binary.BigEndian.PutUint64(rep[8:], uint64(elapsed))
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, _ = c.Write(rep)
}

// echoLoop answers each UDP packet of the session with its header, from the address
// the packet was sent to.
func (s *Server) echoLoop(pc net.PacketConn) {
	r := newReplier(pc)
	buf := make([]byte, 65536)
	for {
		n, dst, from, err := r.read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if _, err := parseUDP(buf[:n], s.tag); err != nil {
			continue
		}
		_ = r.reply(buf[:udpHeaderLen], dst, from)
	}
}

// replier reads packets with their destination address and answers from it. Where the
// platform cannot tell the destination, dst is nil and the kernel picks the source.
type replier struct {
	pc  net.PacketConn
	ip4 *ipv4.PacketConn
	ip6 *ipv6.PacketConn
}

func newReplier(pc net.PacketConn) *replier {
	r := &replier{pc: pc}
	la, ok := pc.LocalAddr().(*net.UDPAddr)
	if !ok {
		return r
	}
	if la.IP.To4() != nil {
		p := ipv4.NewPacketConn(pc)
		if p.SetControlMessage(ipv4.FlagDst, true) == nil {
			r.ip4 = p
		}
		return r
	}
	p := ipv6.NewPacketConn(pc)
	if p.SetControlMessage(ipv6.FlagDst, true) == nil {
		r.ip6 = p
	}
	return r
}

func (r *replier) read(b []byte) (int, net.IP, net.Addr, error) {
	switch {
	case r.ip4 != nil:
		n, cm, from, err := r.ip4.ReadFrom(b)
		if cm != nil {
			return n, cm.Dst, from, err
		}
		return n, nil, from, err
	case r.ip6 != nil:
		n, cm, from, err := r.ip6.ReadFrom(b)
		if cm != nil {
			return n, cm.Dst, from, err
		}
		return n, nil, from, err
	}
	n, from, err := r.pc.ReadFrom(b)
	return n, nil, from, err
}

// reply sends b to to from dst when dst is a unicast address (a request to a broadcast
// address is answered from whatever the kernel picks).
func (r *replier) reply(b []byte, dst net.IP, to net.Addr) error {
	if dst == nil || dst.IsUnspecified() || dst.IsMulticast() || dst.Equal(net.IPv4bcast) {
		_, err := r.pc.WriteTo(b, to)
		return err
	}
	switch {
	case r.ip4 != nil:
		_, err := r.ip4.WriteTo(b, &ipv4.ControlMessage{Src: dst}, to)
		return err
	case r.ip6 != nil:
		_, err := r.ip6.WriteTo(b, &ipv6.ControlMessage{Src: dst}, to)
		return err
	}
	_, err := r.pc.WriteTo(b, to)
	return err
}

// LocalAddresses returns the host's unicast addresses other than loopback and
// link-local ones: where a server on a wildcard address can be reached.
func LocalAddresses() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

// SourceIn returns a local address inside one of cidrs, or false.
func SourceIn(cidrs []netip.Prefix) (netip.Addr, bool) {
	addrs, err := LocalAddresses()
	if err != nil {
		return netip.Addr{}, false
	}
	for _, a := range addrs {
		for _, p := range cidrs {
			if p.Contains(a) {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}
