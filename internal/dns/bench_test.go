package dns

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// BenchmarkDNSPerf runs dnsperf (Debian package dnsperf) against the server on one core
// with a mixed query file: the highest rate it sustains, then latency percentiles at the
// target rate of 50k queries per second.
func BenchmarkDNSPerf(b *testing.B) {
	dnsperf, err := exec.LookPath("dnsperf")
	if err != nil {
		b.Skip("dnsperf not installed (apt-get install -y dnsperf)")
	}
	dir := b.TempDir()
	queries := filepath.Join(dir, "queries")
	if err := os.WriteFile(queries, []byte(benchQueries()), 0o644); err != nil {
		b.Fatal(err)
	}
	srv := exec.Command(os.Args[0], "-test.run=^TestDNSBenchServer$", "-test.count=1")
	srv.Env = append(os.Environ(), "MCNET_DNS_BENCH_SERVER=1", "GOMAXPROCS=1")
	stdin, err := srv.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := srv.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		_ = srv.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("server did not start: %v", err)
	}
	host, port, err := net.SplitHostPort(strings.TrimSpace(strings.TrimPrefix(line, "listening ")))
	if err != nil {
		b.Fatalf("server said %q: %v", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()

	run := func(args ...string) string {
		out, err := exec.CommandContext(b.Context(), dnsperf, append([]string{"-s", host, "-p", port, "-d", queries}, args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("dnsperf: %v\n%s", err, out)
		}
		return string(out)
	}
	// Throughput: as fast as the server answers, 10 s, EDNS0 on.
	out := run("-l", "10", "-c", "4", "-q", "500", "-e")
	qps := field(b, out, `Queries per second:\s+([0-9.]+)`)
	lost := field(b, out, `Queries lost:\s+([0-9]+)`)
	b.ReportMetric(qps, "qps")
	fmt.Printf("dns: dnsperf max throughput, one server core, mixed queries (A/AAAA/SRV/headless/per-pod/NXDOMAIN): %.0f qps (%.0f lost) (target >= 50000)\n", qps, lost)

	// Latency at the target rate, per query from dnsperf's verbose report.
	out = run("-l", "5", "-c", "4", "-Q", "50000", "-v")
	lat := latencies(out)
	if len(lat) == 0 {
		b.Fatalf("no latencies in dnsperf output:\n%.2000s", out)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	b.ReportMetric(float64(p(0.99).Microseconds()), "p99-µs")
	fmt.Printf("dns: latency at 50000 qps offered, one server core: p50 %s, p99 %s, max %s over %d queries (target p99 < 2ms)\n",
		p(0.50), p(0.99), lat[len(lat)-1], len(lat))
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
