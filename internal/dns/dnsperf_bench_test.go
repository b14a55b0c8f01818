package dns

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkDNSPerf measures mcnet's DNS server beside CoreDNS serving the same records,
// in one run, with the same dnsperf query file (A, AAAA, SRV, headless, per-pod names,
// NXDOMAIN and mixed case). Each server gets one core (GOMAXPROCS=1, pinned to CPU 0)
// and dnsperf the other (CPU 1), so the figures compare servers, not schedulers.
//
// CoreDNS serves a zone file written from mcnet's own answers to every query in the
// file, and the benchmark first checks that both answer every query alike. Then, over
// interleaved trials (mcnet, CoreDNS, mcnet, …): the rate each sustains at saturation,
// and latency p50/p99 at a fixed offered load of 50k queries per second, where a
// query lost counts as a timeout and a run that did not reach the offered rate says so.
func BenchmarkDNSPerf(b *testing.B) {
	dnsperf := requireTool(b, "dnsperf", "apt-get install -y dnsperf")
	coredns := coreDNSWithFile(b)
	dir := b.TempDir()
	queryText := benchQueries()
	queries := filepath.Join(dir, "queries")
	if err := os.WriteFile(queries, []byte(queryText), 0o644); err != nil {
		b.Fatal(err)
	}
	zone := filepath.Join(dir, "clusterset.local.zone")
	if err := os.WriteFile(zone, []byte(zoneFromAnswers(b, NewServer("clusterset.local", "hub", benchFleet()), queryText)), 0o644); err != nil {
		b.Fatal(err)
	}
	pin := pinning()

	mcnetAddr := startMcnetDNS(b, pin)
	corednsAddr := startCoreDNS(b, pin, coredns, dir, zone)
	if n, diff := compareAnswers(b, mcnetAddr, corednsAddr, queryText); len(diff) > 0 {
		b.Fatalf("mcnet and CoreDNS answer %d of %d queries differently, so the comparison would not be like for like:\n%s", len(diff), n, strings.Join(diff[:min(len(diff), 10)], "\n"))
	}

	servers := []struct {
		name string
		addr string
	}{{"mcnet", mcnetAddr}, {"coredns", corednsAddr}}
	run := func(addr string, args ...string) dnsperfResult {
		host, port, _ := net.SplitHostPort(addr)
		cmd := append(slices.Clone(pin.client), dnsperf, "-s", host, "-p", port, "-d", queries)
		out, err := exec.CommandContext(b.Context(), cmd[0], append(cmd[1:], args...)...).CombinedOutput()
		if err != nil {
			b.Fatalf("dnsperf: %v\n%.2000s", err, out)
		}
		return parseDNSPerf(b, string(out))
	}

	const trials = 5
	qps := map[string][]float64{}
	lostAtMax := map[string]float64{}
	for range trials {
		for _, s := range servers {
			r := run(s.addr, "-l", "3", "-c", "4", "-q", "500", "-e")
			qps[s.name] = append(qps[s.name], r.qps)
			lostAtMax[s.name] += r.lost
		}
	}
	const offered = 50000
	type latency struct {
		lat                []time.Duration
		sent, lost, runFor float64
	}
	lat := map[string]*latency{}
	for range 3 {
		for _, s := range servers {
			r := run(s.addr, "-l", "3", "-c", "4", "-Q", fmt.Sprint(offered), "-v", "-t", "1")
			l := lat[s.name]
			if l == nil {
				l = &latency{}
				lat[s.name] = l
			}
			l.lat = append(l.lat, r.latencies...)
			// A lost query waited the whole timeout: it counts at the tail.
			for range int(r.lost) {
				l.lat = append(l.lat, time.Second)
			}
			l.sent += r.sent
			l.lost += r.lost
			l.runFor += r.runFor
		}
	}

	fmt.Printf("dns: mcnet beside CoreDNS %s (file plugin, same records), one server core each (%s), dnsperf, mixed queries (A/AAAA/SRV/headless/per-pod/NXDOMAIN/mixed case)\n",
		strings.TrimPrefix(filepath.Base(filepath.Dir(coredns)), "coredns"), pin.say)
	fmt.Printf("dns: %-8s %12s %12s %12s %10s | at %d qps offered: %9s %9s %9s %8s\n", "server", "qps median", "qps min", "qps max", "lost", offered, "achieved", "p50", "p99", "lost")
	medians := map[string]float64{}
	for _, s := range servers {
		q := slices.Sorted(slices.Values(qps[s.name]))
		medians[s.name] = q[len(q)/2]
		l := lat[s.name]
		slices.Sort(l.lat)
		p := func(f float64) time.Duration { return l.lat[min(len(l.lat)-1, int(f*float64(len(l.lat))))] }
		achieved := l.sent / l.runFor
		note := ""
		if achieved < 0.95*offered {
			note = " (offered load NOT reached: the server fell behind, with dnsperf's outstanding queries all in flight)"
		}
		fmt.Printf("dns: %-8s %12.0f %12.0f %12.0f %10.0f | %24.0f %9s %9s %8.0f%s\n", s.name, medians[s.name], q[0], q[len(q)-1], lostAtMax[s.name],
			achieved, p(0.50).Round(time.Microsecond), p(0.99).Round(time.Microsecond), l.lost, note)
		b.ReportMetric(medians[s.name], s.name+"-qps")
		b.ReportMetric(float64(p(0.99).Microseconds()), s.name+"-p99-µs")
		b.ReportMetric(l.lost, s.name+"-lost-at-50k")
	}
	ratio := medians["mcnet"] / medians["coredns"]
	b.ReportMetric(ratio, "qps-ratio")
	fmt.Printf("dns: mcnet/CoreDNS qps at saturation, medians of %d interleaved trials: %.2f (target >= 2.0); mcnet at 50k offered: p99 %s, %.0f lost (target p99 < 1ms, 0 lost)\n",
		trials, ratio, func() time.Duration {
			l := lat["mcnet"]
			return l.lat[min(len(l.lat)-1, int(0.99*float64(len(l.lat))))].Round(time.Microsecond)
		}(), lat["mcnet"].lost)
}

// requireTool finds a benchmark's tool, skipping without it except under CI, where a
// missing tool is a broken setup and fails.
func requireTool(b *testing.B, name, install string) string {
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatalf("%s not installed (%s)", name, install)
		}
		b.Skipf("%s not installed (%s)", name, install)
	}
	return p
}

// coreDNSWithFile finds the project's CoreDNS build (hack/build-tools.sh coredns) that
// has the file plugin compiled in.
func coreDNSWithFile(b *testing.B) string {
	dir, _ := os.Getwd()
	for ; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
	}
	builds, _ := filepath.Glob(filepath.Join(dir, "bin", "coredns", "*", "coredns"))
	for _, p := range slices.Backward(builds) {
		out, err := exec.Command(p, "-plugins").Output()
		if err == nil && slices.Contains(strings.Fields(string(out)), "file") {
			return p
		}
	}
	msg := "no CoreDNS build with the file plugin in bin/coredns (hack/build-tools.sh coredns)"
	if os.Getenv("CI") == "true" {
		b.Fatal(msg)
	}
	b.Skip(msg)
	return ""
}

// cpuPinning says how servers and the client are placed on CPUs.
type cpuPinning struct {
	server, client []string // command prefixes
	say            string
}

// pinning puts servers on CPU 0 and dnsperf on CPU 1 with taskset, where there are two
// CPUs and taskset exists; otherwise it says the run is unpinned.
func pinning() cpuPinning {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return cpuPinning{say: "unpinned: no taskset"}
	}
	if err := exec.Command(ts, "-c", "1", "true").Run(); err != nil {
		return cpuPinning{say: "unpinned: no CPU 1"}
	}
	return cpuPinning{server: []string{ts, "-c", "0"}, client: []string{ts, "-c", "1"}, say: "servers pinned to CPU 0, dnsperf to CPU 1"}
}

// startMcnetDNS runs TestDNSBenchServer in a child process with one core and returns
// its address.
func startMcnetDNS(b *testing.B, pin cpuPinning) string {
	args := append(slices.Clone(pin.server), os.Args[0], "-test.run=^TestDNSBenchServer$", "-test.count=1")
	srv := exec.Command(args[0], args[1:]...)
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
		b.Fatalf("mcnet's DNS server did not start: %v", err)
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	return strings.TrimSpace(strings.TrimPrefix(line, "listening "))
}

// startCoreDNS runs CoreDNS with one core, serving zone for clusterset.local on a free
// loopback port, and returns its address once it answers.
func startCoreDNS(b *testing.B, pin cpuPinning, bin, dir, zone string) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "clusterset.local:%s {\n\tfile %s\n}\n", port, zone), 0o644); err != nil {
		b.Fatal(err)
	}
	args := append(slices.Clone(pin.server), bin, "-conf", conf, "-quiet")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	log, err := os.Create(filepath.Join(dir, "coredns.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		log.Close()
	})
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := c.Exchange(new(dns.Msg).SetQuestion("svc1.ns1.svc.clusterset.local.", dns.TypeA), addr)
		if err == nil {
			return addr
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(log.Name())
			b.Fatalf("CoreDNS exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("CoreDNS does not answer on %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// zoneFromAnswers writes a zone file holding every record s answers to the queries
// (name type per line), so another server can serve the same records. mcnet answers a
// ClusterSetIP name with one cluster's address, drawn by RTT, so each query is asked
// often enough to see every cluster it may answer; CoreDNS then answers with all of
// them, which makes its replies as large as mcnet's or larger.
func zoneFromAnswers(b *testing.B, s *Server, queries string) string {
	var z strings.Builder
	seen := map[string]bool{}
	add := func(rr dns.RR) {
		if rr.Header().Rrtype == dns.TypeOPT {
			return
		}
		rr = dns.Copy(rr)
		rr.Header().Name = strings.ToLower(rr.Header().Name)
		line := rr.String()
		if !seen[line] {
			seen[line] = true
			z.WriteString(line + "\n")
		}
	}
	apex := false
	for _, q := range queryLines(b, queries) {
		for range 63 {
			for _, rr := range s.Reply(q, true).Answer {
				add(rr)
			}
		}
		m := s.Reply(q, true)
		for _, rr := range m.Answer {
			add(rr)
		}
		for _, rr := range m.Extra {
			add(rr)
		}
		for _, rr := range m.Ns {
			if rr.Header().Rrtype == dns.TypeSOA {
				add(rr)
				apex = true
			}
		}
	}
	if !apex {
		b.Fatal("mcnet's answers carry no SOA for the zone: the NXDOMAIN queries should")
	}
	// The file plugin wants the apex's NS too.
	z.WriteString(fmt.Sprintf("clusterset.local.\t%d\tIN\tNS\tns.dns.clusterset.local.\n", DefaultTTL))
	return z.String()
}

// queryLines parses a dnsperf query file into questions.
func queryLines(b *testing.B, queries string) []*dns.Msg {
	var qs []*dns.Msg
	for _, line := range strings.Split(strings.TrimSpace(queries), "\n") {
		f := strings.Fields(line)
		t, ok := dns.StringToType[f[1]]
		if len(f) != 2 || !ok {
			b.Fatalf("bad query line %q", line)
		}
		qs = append(qs, new(dns.Msg).SetQuestion(dns.Fqdn(f[0]), t))
	}
	return qs
}

// compareAnswers asks both servers every distinct query and lists the ones whose rcode
// differs or where mcnet answers a record (case and TTL aside) CoreDNS does not have.
func compareAnswers(b *testing.B, a, c, queries string) (int, []string) {
	cl := &dns.Client{Timeout: 2 * time.Second}
	records := func(m *dns.Msg) []string {
		var rrs []string
		for _, rr := range m.Answer {
			rr = dns.Copy(rr)
			rr.Header().Ttl = 0
			rrs = append(rrs, strings.ToLower(rr.String()))
		}
		slices.Sort(rrs)
		return rrs
	}
	seen := map[string]bool{}
	var diff []string
	for _, q := range queryLines(b, queries) {
		key := q.Question[0].String()
		if seen[key] {
			continue
		}
		seen[key] = true
		q.SetEdns0(4096, false)
		ma, _, err := cl.Exchange(q, a)
		if err != nil {
			b.Fatalf("mcnet: %s: %v", key, err)
		}
		mc, _, err := cl.Exchange(q, c)
		if err != nil {
			b.Fatalf("CoreDNS: %s: %v", key, err)
		}
		ra, rc := records(ma), records(mc)
		same := ma.Rcode == mc.Rcode && len(ra) > 0 == (len(rc) > 0)
		for _, rr := range ra {
			same = same && slices.Contains(rc, rr)
		}
		if !same {
			diff = append(diff, fmt.Sprintf("%s\n  mcnet:   %s %s\n  CoreDNS: %s %s", key,
				dns.RcodeToString[ma.Rcode], strings.Join(ra, " | "), dns.RcodeToString[mc.Rcode], strings.Join(rc, " | ")))
		}
	}
	return len(seen), diff
}

// dnsperfResult is what one dnsperf run reports.
type dnsperfResult struct {
	qps, sent, lost, runFor float64
	latencies               []time.Duration
}

func parseDNSPerf(b *testing.B, out string) dnsperfResult {
	r := dnsperfResult{
		qps:    field(b, out, `Queries per second:\s+([0-9.]+)`),
		sent:   field(b, out, `Queries sent:\s+([0-9]+)`),
		lost:   field(b, out, `Queries lost:\s+([0-9]+)`),
		runFor: field(b, out, `Run time \(s\):\s+([0-9.]+)`),
	}
	if strings.Contains(out, "\n> ") || strings.HasPrefix(out, "> ") {
		r.latencies = latencies(out)
		if len(r.latencies) == 0 {
			b.Fatalf("no latencies in dnsperf output:\n%.2000s", out)
		}
	}
	return r
}
