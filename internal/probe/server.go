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
	"time"
)

// Server answers throughput streams and UDP echoes of one session on one port.
type Server struct {
	tag sessionTag
	tcp net.Listener
	udp net.PacketConn
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
		udp, err := lc.ListenPacket(ctx, "udp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			tcp.Close()
			if port != "0" {
				return nil, fmt.Errorf("listen udp %s: %w", addr, err)
			}
			continue
		}
		s := &Server{tag: tagOf(session), tcp: tcp, udp: udp}
		s.wg.Go(s.acceptLoop)
		s.wg.Go(s.echoLoop)
		return s, nil
	}
	return nil, fmt.Errorf("listen %s: no port free for both TCP and UDP", addr)
}

// Port is the TCP and UDP port the server listens on.
func (s *Server) Port() int { return s.tcp.Addr().(*net.TCPAddr).Port }

// Close stops the server and waits for its goroutines.
func (s *Server) Close() error {
	err := errors.Join(s.tcp.Close(), s.udp.Close())
	s.wg.Wait()
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

// echoLoop answers each UDP packet of the session with its header.
func (s *Server) echoLoop() {
	buf := make([]byte, 65536)
	for {
		n, from, err := s.udp.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if _, err := parseUDP(buf[:n], s.tag); err != nil {
			continue
		}
		_, _ = s.udp.WriteTo(buf[:udpHeaderLen], from)
	}
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
