package dns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// DefaultTTL is the TTL of answers and of negative answers, in seconds.
const DefaultTTL = 5

// ednsSize is the UDP payload size the server advertises: the DNS flag day 2020 value,
// which avoids IP fragmentation on common paths.
const ednsSize = 1232

// Server answers queries for one domain from an Index.
type Server struct {
	// Index holds the services and the clusters' health.
	Index *Index
	// LocalCluster is this cluster's name: its endpoints are preferred.
	LocalCluster string
	// TTL of every record, in seconds.
	TTL uint32

	zone    string // lower-case, fully qualified: "clusterset.local."
	dotZone string // "." + zone
	// random returns a uniform number in [0, 1); tests replace it.
	random func() float64
}

// NewServer returns a server authoritative for domain (e.g. "clusterset.local").
func NewServer(domain, localCluster string, ix *Index) *Server {
	return &Server{
		Index:        ix,
		LocalCluster: localCluster,
		TTL:          DefaultTTL,
		zone:         dns.Fqdn(strings.ToLower(domain)),
		dotZone:      "." + dns.Fqdn(strings.ToLower(domain)),
		random:       rand.Float64,
	}
}

// ListenAndServe serves on addr over UDP and TCP until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen for DNS on udp %s: %w", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		pc.Close()
		return fmt.Errorf("listen for DNS on tcp %s: %w", addr, err)
	}
	return s.Serve(ctx, pc, l)
}

// Serve answers queries arriving on pc (UDP) and l (TCP) until ctx ends, then closes
// both.
//
// UDP is served by a loop per core that reads, answers and writes with buffers it
// reuses, rather than by miekg/dns's server, which starts a goroutine and allocates per
// packet: the loop doubles the queries one core answers. TCP, where each connection
// carries its own framing and timeouts, uses miekg/dns's server.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	tcp := &dns.Server{Listener: l, Handler: s}
	errs := make(chan error, 1+runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	wg.Go(func() { errs <- tcp.ActivateAndServe() })
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() { errs <- s.serveUDP(pc) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	// Shutdown alone is refused while the TCP server has not started yet ("server not
	// started"), and the server then starts and serves on: closing the listener ends it
	// either way.
	_ = tcp.Shutdown()
	_ = l.Close()
	_ = pc.Close()
	wg.Wait()
	return err
}

// serveUDP answers datagrams until pc is closed.
func (s *Server) serveUDP(pc net.PacketConn) error {
	in := make([]byte, dns.MaxMsgSize)
	out := make([]byte, dns.MaxMsgSize)
	var req, resp dns.Msg
	udp, _ := pc.(*net.UDPConn)
	for {
		var n int
		var from netip.AddrPort
		var addr net.Addr
		var err error
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(in) // no allocation per packet
		} else {
			n, addr, err = pc.ReadFrom(in)
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		if err := req.Unpack(in[:n]); err != nil {
			if n < 12 || in[2]&0x80 != 0 { // no header, or a response: drop it
				continue
			}
			resp = dns.Msg{}
			resp.Id = uint16(in[0])<<8 | uint16(in[1])
			resp.Response, resp.Rcode = true, dns.RcodeFormatError
		} else if req.Response {
			continue
		} else {
			s.reply(&resp, &req, false)
		}
		b, err := resp.PackBuffer(out)
		if err != nil {
			continue
		}
		if udp != nil {
			_, _ = udp.WriteToUDPAddrPort(b, from)
		} else {
			_, _ = pc.WriteTo(b, addr)
		}
	}
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, tcp := w.RemoteAddr().(*net.TCPAddr)
	_ = w.WriteMsg(s.Reply(req, tcp))
}

// Reply answers one query; tcp says whether the reply may exceed the UDP limits.
func (s *Server) Reply(req *dns.Msg, tcp bool) *dns.Msg {
	m := new(dns.Msg)
	s.reply(m, req, tcp)
	return m
}

// ednsOPT is the OPT record of every EDNS0 reply. Replies share it: packing only reads
// it (except for extended rcodes, which get an OPT of their own).
var ednsOPT = func() *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(ednsSize)
	return o
}()

// reply answers req into m, reusing m's slices: the UDP loop keeps one m, so that a
// query allocates little and the garbage collector, which on one core delays answers,
// runs rarely.
func (s *Server) reply(m *dns.Msg, req *dns.Msg, tcp bool) {
	*m = dns.Msg{
		MsgHdr:   dns.MsgHdr{Id: req.Id, Response: true, Opcode: req.Opcode, Authoritative: true},
		Question: m.Question[:0],
		Answer:   m.Answer[:0],
		Ns:       m.Ns[:0],
		Extra:    m.Extra[:0],
	}
	if req.Opcode == dns.OpcodeQuery {
		m.RecursionDesired, m.CheckingDisabled = req.RecursionDesired, req.CheckingDisabled
	}
	if len(req.Question) > 0 {
		m.Question = append(m.Question, req.Question[0])
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		if opt.Version() != 0 {
			m.Rcode = dns.RcodeBadVers
			m.SetEdns0(ednsSize, false)
			return
		}
		size = max(dns.MinMsgSize, min(int(opt.UDPSize()), ednsSize))
		defer func() { m.Extra = append(m.Extra, ednsOPT) }() // before packing, after any early return
	}
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
		return
	case len(req.Question) != 1:
		m.Rcode = dns.RcodeFormatError
		return
	case req.Question[0].Qclass != dns.ClassINET && req.Question[0].Qclass != dns.ClassANY:
		m.Rcode = dns.RcodeRefused
		return
	}
	s.resolve(m, req.Question[0])
	if tcp {
		size = dns.MaxMsgSize
	}
	if req.IsEdns0() != nil {
		size -= dns.Len(ednsOPT) // the OPT record is appended after truncation
	}
	m.Truncate(size)
}

// query is one question being answered.
type query struct {
	s      *Server
	m      *dns.Msg
	name   string // as asked, to echo its case
	qtype  uint16
	health map[string]Health
}

func (s *Server) resolve(m *dns.Msg, q dns.Question) {
	lname := strings.ToLower(q.Name)
	if lname != s.zone && !strings.HasSuffix(lname, s.dotZone) {
		m.Rcode = dns.RcodeRefused
		m.Authoritative = false
		return
	}
	qq := query{s: s, m: m, name: q.Name, qtype: q.Qtype, health: *s.Index.health.Load()}
	if lname == s.zone {
		qq.apex()
		return
	}
	rest := strings.TrimSuffix(lname, s.dotZone) // e.g. "db.app.svc"
	if rest == "dns-version" {
		qq.version()
		return
	}
	if rest == "svc" {
		qq.nodata()
		return
	}
	rest, ok := strings.CutSuffix(rest, ".svc")
	if !ok {
		qq.nxdomain()
		return
	}
	var buf [8]string // names have at most 5 labels here; no allocation
	labels, ok := splitLabels(rest, buf[:0])
	if !ok {
		qq.nxdomain()
		return
	}
	n := len(labels)
	if n == 1 {
		if s.Index.hasNamespace(labels[0]) {
			qq.nodata()
		} else {
			qq.nxdomain()
		}
		return
	}
	e := s.Index.lookup(labels[n-1], labels[n-2])
	if e == nil {
		qq.nxdomain()
		return
	}
	prefix := labels[:n-2]
	var port, proto string
	if len(prefix) >= 2 && strings.HasPrefix(prefix[0], "_") && strings.HasPrefix(prefix[1], "_") {
		port, proto, prefix = prefix[0][1:], prefix[1][1:], prefix[2:]
	}
	var b *Backend
	if len(prefix) >= 1 {
		if b = e.byCluster[prefix[len(prefix)-1]]; b == nil {
			qq.nxdomain()
			return
		}
	}
	switch {
	case len(prefix) == 2 && port == "":
		ep := e.byHost[prefix[1]][prefix[0]]
		if !e.svc.Headless || ep == nil {
			qq.nxdomain()
			return
		}
		qq.endpoint(ep)
	case len(prefix) > 1:
		qq.nxdomain()
	case port != "":
		qq.srv(e, b, port, proto)
	case b != nil:
		qq.cluster(e, b)
	default:
		qq.service(e)
	}
}
