package dns

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// benchFleet is the index the benchmarks serve: 1000 services in 10 namespaces, one in
// five headless with 5 pods per cluster, exported from 3 clusters (one not local).
func benchFleet() *Index {
	ix := NewIndex()
	clusters := []string{"hub", "east", "west"}
	for i := range 1000 {
		s := &Service{Namespace: fmt.Sprintf("ns%d", i%10), Name: fmt.Sprintf("svc%d", i), Headless: i%5 == 0,
			Ports: []Port{{Name: "http", Protocol: "TCP", Port: 80}, {Name: "grpc", Protocol: "TCP", Port: 9090}}}
		for c, cluster := range clusters {
			b := Backend{Cluster: cluster}
			if s.Headless {
				for p := range 5 {
					b.Endpoints = append(b.Endpoints, Endpoint{Hostname: fmt.Sprintf("pod-%d", p), Addrs: addrs(fmt.Sprintf("10.%d.%d.%d", 10+c, i/50, (i%50)*5+p+1)), Ready: true})
				}
			} else {
				// hub's copy is not ready for odd services: those answer by RTT.
				b.Endpoints = []Endpoint{{Addrs: addrs(fmt.Sprintf("10.%d.%d.%d", 110+c, i/250, i%250+1), fmt.Sprintf("fd00:%d::%x", 110+c, i+1)), Ready: cluster != "hub" || i%2 == 0}}
			}
			s.Backends = append(s.Backends, b)
		}
		ix.Set(s)
	}
	ix.SetHealth(map[string]Health{"east": {Connected: true, RTT: time.Millisecond}, "west": {Connected: true, RTT: 4 * time.Millisecond}})
	return ix
}

// benchQueries is a mixed query file for dnsperf.
func benchQueries() string {
	var b strings.Builder
	for i := range 1000 {
		svc := fmt.Sprintf("svc%d.ns%d.svc.clusterset.local", i, i%10)
		switch {
		case i%5 == 0: // headless
			fmt.Fprintf(&b, "%s A\npod-%d.east.%s A\n_http._tcp.%s SRV\n", svc, i%5, svc, svc)
		default:
			fmt.Fprintf(&b, "%s A\n%s A\n%s AAAA\nwest.%s A\n_grpc._tcp.%s SRV\n", svc, svc, svc, svc, svc)
		}
		if i%10 == 0 {
			fmt.Fprintf(&b, "missing%d.ns%d.svc.clusterset.local A\n", i, i%10)
		}
		if i%10 == 3 { // resolvers may send any case (and some randomise it)
			fmt.Fprintf(&b, "SVC%d.Ns%d.svc.ClusterSet.LOCAL A\n", i, i%10)
		}
	}
	return b.String()
}

// TestDNSBenchServer is the benchmark's server process: BenchmarkDNSPerf runs the test
// binary again with MCNET_DNS_BENCH_SERVER set and GOMAXPROCS=1, so the server has one
// core while dnsperf has the other. It serves until its stdin closes.
func TestDNSBenchServer(t *testing.T) {
	if os.Getenv("MCNET_DNS_BENCH_SERVER") == "" {
		t.Skip("only run as BenchmarkDNSPerf's server process")
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	fmt.Printf("listening %s\n", pc.LocalAddr())
	if err := NewServer("clusterset.local", "hub", benchFleet()).Serve(ctx, pc, l); err != nil {
		t.Fatal(err)
	}
}

func field(b *testing.B, out, re string) float64 {
	b.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no %s in dnsperf output:\n%s", re, out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// latencies reads dnsperf -v lines: "> NOERROR name type 0.000123".
func latencies(out string) []time.Duration {
	var lat []time.Duration
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "> ") {
			continue
		}
		f := strings.Fields(line)
		s, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		lat = append(lat, time.Duration(s*float64(time.Second)))
	}
	return lat
}

// BenchmarkReply measures the handler alone, without sockets.
func BenchmarkReply(b *testing.B) {
	s := NewServer("clusterset.local", "hub", benchFleet())
	qs := strings.Split(strings.TrimSpace(benchQueries()), "\n")
	msgs := make([]*dns.Msg, len(qs))
	for i, q := range qs {
		f := strings.Fields(q)
		msgs[i] = new(dns.Msg).SetQuestion(dns.Fqdn(f[0]), dns.StringToType[f[1]])
	}
	var m dns.Msg // reused, as the UDP loop does
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s.reply(&m, msgs[i%len(msgs)], false)
	}
}
