package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"
)

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

// fleet is the index every server test starts from: the local cluster is hub.
func fleet() *Index {
	ix := NewIndex()
	ix.Set(&Service{Namespace: "app", Name: "db", Ports: []Port{{Name: "pg", Protocol: "TCP", Port: 5432}, {Protocol: "TCP", Port: 9187}}, Backends: []Backend{
		{Cluster: "east", Endpoints: []Endpoint{{Addrs: addrs("10.110.0.10"), Ready: true}}},
		{Cluster: "west", Endpoints: []Endpoint{{Addrs: addrs("10.120.0.20", "fd00:120::20"), Ready: true}}},
		{Cluster: "hub", Endpoints: []Endpoint{{Addrs: addrs("10.100.0.30"), Ready: false}}},
	}})
	ix.Set(&Service{Namespace: "app", Name: "web", Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}}, Backends: []Backend{
		{Cluster: "east", Endpoints: []Endpoint{{Addrs: addrs("10.110.0.11"), Ready: true}}},
		{Cluster: "hub", Endpoints: []Endpoint{{Addrs: addrs("10.100.0.31"), Ready: true}}},
	}})
	ix.Set(&Service{Namespace: "data", Name: "cass", Headless: true, Ports: []Port{{Name: "cql", Protocol: "TCP", Port: 9042}}, Backends: []Backend{
		{Cluster: "east", Ports: []Port{{Name: "cql", Protocol: "TCP", Port: 19042}}, Endpoints: []Endpoint{
			{Hostname: "cass-0", Addrs: addrs("10.10.1.1"), Ready: true},
			{Hostname: "cass-1", Addrs: addrs("10.10.1.2"), Ready: false},
			{Addrs: addrs("10.10.1.3"), Ready: true},
		}},
		{Cluster: "west", Endpoints: []Endpoint{{Hostname: "cass-0", Addrs: addrs("10.20.1.1"), Ready: true}}},
		{Cluster: "south", Endpoints: []Endpoint{{Hostname: "cass-0", Addrs: addrs("10.30.1.1"), Ready: true}}},
	}})
	ix.SetHealth(map[string]Health{
		"east":  {Connected: true, RTT: time.Millisecond},
		"west":  {Connected: true, RTT: 3 * time.Millisecond},
		"south": {Connected: false, RTT: time.Millisecond},
	})
	return ix
}

type testServer struct {
	udp, tcp string
	srv      *Server
}

func start(t *testing.T, ix *Index) *testServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer("ClusterSet.Local", "hub", ix)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &testServer{udp: pc.LocalAddr().String(), tcp: l.Addr().String(), srv: srv}
}

func (s *testServer) exchange(t *testing.T, network string, m *dns.Msg) *dns.Msg {
	t.Helper()
	addr := s.udp
	if network == "tcp" {
		addr = s.tcp
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	var resp *dns.Msg
	var err error
	// The listeners are bound before Serve runs, so only a slow start needs a retry.
	for range 50 {
		if resp, _, err = c.Exchange(m, addr); err == nil {
			return resp
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("exchange %s over %s: %v", m.Question[0].Name, network, err)
	return nil
}

func (s *testServer) ask(t *testing.T, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return s.exchange(t, network, m)
}

// rrs renders records one a line, sorted, without TTL columns.
func rrs(rr []dns.RR) []string {
	var out []string
	for _, r := range rr {
		f := strings.Split(r.String(), "\t")
		out = append(out, strings.Join(append(f[:1:1], f[2:]...), " "))
	}
	slices.Sort(out)
	return out
}

func TestServerNames(t *testing.T) {
	ts := start(t, fleet())
	ts.srv.random = func() float64 { return 0 } // the first eligible cluster, east
	const z = "clusterset.local."
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"db.app.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"db.app.svc.clusterset.local. IN A 10.110.0.10"}},
		{"DB.App.svc.ClusterSet.Local.", dns.TypeA, dns.RcodeSuccess, []string{"DB.App.svc.ClusterSet.Local. IN A 10.110.0.10"}},
		// Only west has IPv6: the choice is among clusters with addresses of the family.
		{"db.app.svc." + z, dns.TypeAAAA, dns.RcodeSuccess, []string{"db.app.svc.clusterset.local. IN AAAA fd00:120::20"}},
		{"web.app.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"web.app.svc.clusterset.local. IN A 10.100.0.31"}},
		{"web.app.svc." + z, dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"west.db.app.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"west.db.app.svc.clusterset.local. IN A 10.120.0.20"}},
		// An explicit cluster answers even when its endpoints are not ready.
		{"hub.db.app.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"hub.db.app.svc.clusterset.local. IN A 10.100.0.30"}},
		{"north.db.app.svc." + z, dns.TypeA, dns.RcodeNameError, nil},
		{"_pg._tcp.db.app.svc." + z, dns.TypeSRV, dns.RcodeSuccess, []string{"_pg._tcp.db.app.svc.clusterset.local. IN SRV 0 100 5432 db.app.svc.clusterset.local."}},
		{"_pg._tcp.east.db.app.svc." + z, dns.TypeSRV, dns.RcodeSuccess, []string{"_pg._tcp.east.db.app.svc.clusterset.local. IN SRV 0 100 5432 east.db.app.svc.clusterset.local."}},
		{"_pg._udp.db.app.svc." + z, dns.TypeSRV, dns.RcodeNameError, nil},
		{"db.app.svc." + z, dns.TypeSRV, dns.RcodeSuccess, []string{"db.app.svc.clusterset.local. IN SRV 0 100 5432 db.app.svc.clusterset.local."}},
		// Headless: every ready pod of healthy clusters (south's cable is down).
		{"cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{
			"cass.data.svc.clusterset.local. IN A 10.10.1.1", "cass.data.svc.clusterset.local. IN A 10.10.1.3", "cass.data.svc.clusterset.local. IN A 10.20.1.1"}},
		{"south.cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"south.cass.data.svc.clusterset.local. IN A 10.30.1.1"}},
		{"cass-0.west.cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"cass-0.west.cass.data.svc.clusterset.local. IN A 10.20.1.1"}},
		{"cass-0.east.cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"cass-0.east.cass.data.svc.clusterset.local. IN A 10.10.1.1"}},
		{"10-10-1-3.east.cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, []string{"10-10-1-3.east.cass.data.svc.clusterset.local. IN A 10.10.1.3"}},
		{"cass-1.east.cass.data.svc." + z, dns.TypeA, dns.RcodeSuccess, nil}, // not ready
		{"cass-9.east.cass.data.svc." + z, dns.TypeA, dns.RcodeNameError, nil},
		{"x.east.db.app.svc." + z, dns.TypeA, dns.RcodeNameError, nil}, // pods of a ClusterSetIP service have no names
		{"_cql._tcp.cass.data.svc." + z, dns.TypeSRV, dns.RcodeSuccess, []string{
			"_cql._tcp.cass.data.svc.clusterset.local. IN SRV 0 100 19042 10-10-1-3.east.cass.data.svc.clusterset.local.",
			"_cql._tcp.cass.data.svc.clusterset.local. IN SRV 0 100 19042 cass-0.east.cass.data.svc.clusterset.local.",
			"_cql._tcp.cass.data.svc.clusterset.local. IN SRV 0 100 9042 cass-0.west.cass.data.svc.clusterset.local."}},
		{"_cql._tcp.west.cass.data.svc." + z, dns.TypeSRV, dns.RcodeSuccess, []string{
			"_cql._tcp.west.cass.data.svc.clusterset.local. IN SRV 0 100 9042 cass-0.west.cass.data.svc.clusterset.local."}},
		{"nope.app.svc." + z, dns.TypeA, dns.RcodeNameError, nil},
		{"db.nope.svc." + z, dns.TypeA, dns.RcodeNameError, nil},
		{"app.svc." + z, dns.TypeA, dns.RcodeSuccess, nil}, // a namespace with imports
		{"other.svc." + z, dns.TypeA, dns.RcodeNameError, nil},
		{"svc." + z, dns.TypeA, dns.RcodeSuccess, nil},
		{"db.app." + z, dns.TypeA, dns.RcodeNameError, nil},
		{z, dns.TypeSOA, dns.RcodeSuccess, []string{"clusterset.local. IN SOA ns.dns.clusterset.local. hostmaster.clusterset.local. 4 60 10 3600 5"}},
		{z, dns.TypeNS, dns.RcodeSuccess, []string{"clusterset.local. IN NS ns.dns.clusterset.local."}},
		{"db.app.svc.cluster.local.", dns.TypeA, dns.RcodeRefused, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tt := range tests {
			t.Run(network+"/"+dns.TypeToString[tt.qtype]+"/"+tt.name, func(t *testing.T) {
				resp := ts.ask(t, network, tt.name, tt.qtype)
				if resp.Rcode != tt.rcode {
					t.Errorf("rcode %s, want %s", dns.RcodeToString[resp.Rcode], dns.RcodeToString[tt.rcode])
				}
				if diff := cmp.Diff(tt.want, rrs(resp.Answer)); diff != "" {
					t.Errorf("answer (-want +got):\n%s", diff)
				}
				if tt.rcode == dns.RcodeRefused {
					return
				}
				if !resp.Authoritative {
					t.Error("answer is not authoritative")
				}
				for _, rr := range resp.Answer {
					if rr.Header().Ttl != DefaultTTL {
						t.Errorf("TTL %d, want %d", rr.Header().Ttl, DefaultTTL)
					}
				}
				// Negative answers carry the SOA, whose minimum is the negative TTL.
				if len(resp.Answer) == 0 {
					if len(resp.Ns) != 1 || resp.Ns[0].Header().Rrtype != dns.TypeSOA || resp.Ns[0].(*dns.SOA).Minttl != DefaultTTL {
						t.Errorf("negative answer without the SOA: %v", resp.Ns)
					}
				}
			})
		}
	}
}

func TestServerSRVAdditional(t *testing.T) {
	ts := start(t, fleet())
	resp := ts.ask(t, "udp", "_cql._tcp.west.cass.data.svc.clusterset.local.", dns.TypeSRV)
	want := []string{"cass-0.west.cass.data.svc.clusterset.local. IN A 10.20.1.1"}
	if diff := cmp.Diff(want, rrs(resp.Extra)); diff != "" {
		t.Errorf("additional section (-want +got):\n%s", diff)
	}
}

// The conformance suite's service has TCP and UDP ports of one number; an SRV query of
// its bare name gets one record per number and target, as from Kubernetes DNS.
func TestServerSRVOneRecordPerPortAndTarget(t *testing.T) {
	ix := NewIndex()
	ports := []Port{{Name: "tcp", Protocol: "TCP", Port: 42}, {Name: "udp", Protocol: "UDP", Port: 42}}
	ix.Set(&Service{Namespace: "conf", Name: "hello", Ports: ports, Backends: []Backend{
		{Cluster: "east", Endpoints: []Endpoint{{Addrs: addrs("10.110.0.42"), Ready: true}}},
	}})
	ix.Set(&Service{Namespace: "conf", Name: "headless", Headless: true, Ports: ports, Backends: []Backend{
		{Cluster: "east", Endpoints: []Endpoint{{Addrs: addrs("10.10.0.5"), Ready: true}, {Addrs: addrs("10.10.0.6"), Ready: true}}},
	}})
	ix.SetHealth(map[string]Health{"east": {Connected: true}})
	ts := start(t, ix)
	tests := []struct {
		name string
		want []string
	}{
		{"hello.conf.svc.clusterset.local.", []string{"hello.conf.svc.clusterset.local. IN SRV 0 100 42 hello.conf.svc.clusterset.local."}},
		{"_udp._udp.hello.conf.svc.clusterset.local.", []string{"_udp._udp.hello.conf.svc.clusterset.local. IN SRV 0 100 42 hello.conf.svc.clusterset.local."}},
		{"headless.conf.svc.clusterset.local.", []string{
			"headless.conf.svc.clusterset.local. IN SRV 0 100 42 10-10-0-5.east.headless.conf.svc.clusterset.local.",
			"headless.conf.svc.clusterset.local. IN SRV 0 100 42 10-10-0-6.east.headless.conf.svc.clusterset.local.",
		}},
	}
	for _, tt := range tests {
		resp := ts.ask(t, "udp", tt.name, dns.TypeSRV)
		if diff := cmp.Diff(tt.want, rrs(resp.Answer)); diff != "" {
			t.Errorf("SRV %s (-want +got):\n%s", tt.name, diff)
		}
		if len(resp.Extra) > len(tt.want) {
			t.Errorf("SRV %s: %d additional records for %d targets", tt.name, len(resp.Extra), len(tt.want))
		}
	}
}

// A ClusterSetIP service answers with its VIPs once allocated, whichever clusters are
// ready; the per-cluster names keep answering each cluster's own ClusterIP.
func TestServerClusterSetIP(t *testing.T) {
	ix := fleet()
	ix.Set(&Service{Namespace: "app", Name: "web", ClusterSetIPs: addrs("10.100.7.7", "fd00:100::7"), Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}}, Backends: []Backend{
		{Cluster: "east", Endpoints: []Endpoint{{Addrs: addrs("10.110.0.11"), Ready: true}}},
		{Cluster: "hub", Endpoints: []Endpoint{{Addrs: addrs("10.100.0.31"), Ready: false}}},
	}})
	ts := start(t, ix)
	tests := []struct {
		name  string
		qtype uint16
		want  []string
	}{
		{"web.app.svc.clusterset.local.", dns.TypeA, []string{"web.app.svc.clusterset.local. IN A 10.100.7.7"}},
		{"web.app.svc.clusterset.local.", dns.TypeAAAA, []string{"web.app.svc.clusterset.local. IN AAAA fd00:100::7"}},
		{"east.web.app.svc.clusterset.local.", dns.TypeA, []string{"east.web.app.svc.clusterset.local. IN A 10.110.0.11"}},
		{"web.app.svc.clusterset.local.", dns.TypeSRV, []string{"web.app.svc.clusterset.local. IN SRV 0 100 80 web.app.svc.clusterset.local."}},
	}
	for _, tt := range tests {
		resp := ts.ask(t, "udp", tt.name, tt.qtype)
		if diff := cmp.Diff(tt.want, rrs(resp.Answer)); diff != "" || resp.Rcode != dns.RcodeSuccess || !resp.Authoritative {
			t.Errorf("%s %s: rcode %d aa %v (-want +got):\n%s", tt.name, dns.TypeToString[tt.qtype], resp.Rcode, resp.Authoritative, diff)
		}
	}
}

// The Multicluster DNS specification's schema version record, and a headless service
// without ready pods, which has no name.
func TestServerVersionAndEmptyHeadless(t *testing.T) {
	ix := fleet()
	ix.Set(&Service{Namespace: "data", Name: "empty", Headless: true, Ports: []Port{{Name: "cql", Protocol: "TCP", Port: 9042}}, Backends: []Backend{
		{Cluster: "hub", Endpoints: []Endpoint{{Hostname: "empty-0", Addrs: addrs("10.100.1.1"), Ready: false}}},
		{Cluster: "south", Endpoints: []Endpoint{{Hostname: "empty-0", Addrs: addrs("10.30.1.9"), Ready: true}}}, // not connected
	}})
	ts := start(t, ix)
	tests := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"dns-version.clusterset.local.", dns.TypeTXT, dns.RcodeSuccess, []string{`dns-version.clusterset.local. IN TXT "1.0.0"`}},
		{"dns-version.clusterset.local.", dns.TypeA, dns.RcodeSuccess, nil},
		{"empty.data.svc.clusterset.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"empty.data.svc.clusterset.local.", dns.TypeSRV, dns.RcodeNameError, nil},
		{"cass.data.svc.clusterset.local.", dns.TypeAAAA, dns.RcodeSuccess, nil}, // ready pods, of the other family
	}
	for _, tt := range tests {
		resp := ts.ask(t, "udp", tt.name, tt.qtype)
		if diff := cmp.Diff(tt.want, rrs(resp.Answer)); diff != "" || resp.Rcode != tt.rcode {
			t.Errorf("%s %s: rcode %d, want %d (-want +got):\n%s", tt.name, dns.TypeToString[tt.qtype], resp.Rcode, tt.rcode, diff)
		}
	}
}

// bigIndex has a headless service with n pods in one cluster.
func bigIndex(n int) *Index {
	ix := NewIndex()
	var eps []Endpoint
	for i := range n {
		eps = append(eps, Endpoint{Hostname: fmt.Sprintf("pod-%d", i), Addrs: addrs(fmt.Sprintf("10.10.%d.%d", i/250, i%250+1)), Ready: true}) //nolint
	}
	ix.Set(&Service{Namespace: "data", Name: "big", Headless: true, Backends: []Backend{{Cluster: "hub", Endpoints: eps}}})
	return ix
}

func TestServerEDNS0AndTruncation(t *testing.T) {
	ts := start(t, bigIndex(200))
	const name = "big.data.svc.clusterset.local."
	tests := []struct {
		network  string
		edns     uint16 // 0: no OPT
		truncate bool
		min, max int // answers
	}{
		{"udp", 0, true, 1, 512 / 16},
		{"udp", 4096, true, 512 / 16, 1232 / 16}, // capped at the advertised 1232
		{"udp", 1232, true, 512 / 16, 1232 / 16},
		{"tcp", 0, false, 200, 200},
		{"tcp", 4096, false, 200, 200},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/edns%d", tt.network, tt.edns), func(t *testing.T) {
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			if tt.edns > 0 {
				m.SetEdns0(tt.edns, false)
			}
			resp := ts.exchange(t, tt.network, m)
			if resp.Truncated != tt.truncate {
				t.Errorf("TC %v, want %v", resp.Truncated, tt.truncate)
			}
			if n := len(resp.Answer); n < tt.min || n > tt.max {
				t.Errorf("%d answers, want %d..%d", n, tt.min, tt.max)
			}
			opt := resp.IsEdns0()
			if (opt != nil) != (tt.edns > 0) {
				t.Errorf("OPT in reply %v, want %v", opt != nil, tt.edns > 0)
			}
			if opt != nil && opt.UDPSize() != ednsSize {
				t.Errorf("advertised %d, want %d", opt.UDPSize(), ednsSize)
			}
		})
	}
	t.Run("unknown EDNS version", func(t *testing.T) {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(1)
		if resp := ts.exchange(t, "udp", m); resp.Rcode != dns.RcodeBadVers {
			t.Errorf("rcode %s, want BADVERS", dns.RcodeToString[resp.Rcode])
		}
	})
}

// TestServerWeightedChoice asks many times over UDP: answers follow 1/RTT among the
// connected clusters with ready endpoints, and never name an unhealthy one.
func TestServerWeightedChoice(t *testing.T) {
	ix := fleet()
	ts := start(t, ix)
	const n = 2000
	count := func(t *testing.T) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			resp := ts.ask(t, "udp", "db.app.svc.clusterset.local.", dns.TypeA)
			if len(resp.Answer) == 0 {
				got["none"]++
				continue
			}
			got[resp.Answer[0].(*dns.A).A.String()]++
		}
		return got
	}
	east, west := "10.110.0.10", "10.120.0.20"

	t.Run("closer answers more often", func(t *testing.T) {
		got := count(t)
		// Weights 1/1ms and 1/3ms: east 75 %, west 25 %.
		if share := float64(got[east]) / n; share < 0.70 || share > 0.80 {
			t.Errorf("east answered %.2f of queries, want 0.75 ± 0.05 (%v)", share, got)
		}
		if got[east]+got[west] != n {
			t.Errorf("answers outside east and west: %v", got)
		}
	})
	t.Run("equal RTT answers evenly", func(t *testing.T) {
		ix.SetHealth(map[string]Health{"east": {Connected: true, RTT: 2 * time.Millisecond}, "west": {Connected: true, RTT: 2 * time.Millisecond}})
		got := count(t)
		if share := float64(got[east]) / n; share < 0.45 || share > 0.55 {
			t.Errorf("east answered %.2f of queries, want 0.5 ± 0.05 (%v)", share, got)
		}
	})
	t.Run("a cluster whose connection is down never answers", func(t *testing.T) {
		ix.SetHealth(map[string]Health{"east": {Connected: false, RTT: time.Microsecond}, "west": {Connected: true, RTT: 50 * time.Millisecond}})
		if got := count(t); got[west] != n {
			t.Errorf("want only west: %v", got)
		}
	})
	t.Run("no healthy cluster: no address, the name still exists", func(t *testing.T) {
		ix.SetHealth(nil)
		resp := ts.ask(t, "udp", "db.app.svc.clusterset.local.", dns.TypeA)
		if resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 {
			t.Errorf("want NOERROR without answers, got %s %v", dns.RcodeToString[resp.Rcode], resp.Answer)
		}
	})
	t.Run("a withdrawn service is NXDOMAIN", func(t *testing.T) {
		ix.Delete("app", "db")
		if resp := ts.ask(t, "tcp", "db.app.svc.clusterset.local.", dns.TypeA); resp.Rcode != dns.RcodeNameError {
			t.Errorf("rcode %s, want NXDOMAIN", dns.RcodeToString[resp.Rcode])
		}
	})
}
