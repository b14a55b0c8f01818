package dataplane

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mcnet-io/mcnet/internal/machine"
)

// BenchmarkVXLANAblation finds where the VXLAN cable's throughput goes. In the lab of
// BenchmarkDataplaneThroughput (poda ── gwa ══ wan ══ gwb ── podb) it measures, in one
// run and interleaved over MCNET_BENCH_TRIALS trials (default 5), plain routing, a
// hand-made kernel VXLAN pair with no packet filter (the baseline), and variants that
// change one factor at a time (each trial runs them all, starting one later than the
// trial before):
//
//   - on the baseline: the outer UDP checksum (zero or computed), a fixed outer UDP
//     source port instead of one hashed per flow, GRO on the veths, the tunnel's
//     MTU on plain routing (a 1450-byte path with no tunnel);
//   - on the baseline, mcnet's additions one at a time: an identity snat chain like
//     keep-source (which turns conntrack on for every packet), the policy rule and
//     routing table;
//   - on mcnet's cable: without each of its nftables chains in turn (keep-source is
//     a nat chain, so without it nothing in the namespaces uses conntrack), with its
//     VXLAN packets tracked as well (as before the untracked chains), with strict or
//     no reverse-path filtering, and with GRO on the veths.
//
// Each figure is the median of the trials with its min and max, with the CPU seconds
// per Gbit the iperf3 ends spent beside it (see iperfProcCPU), and ratios are of medians against the
// hand-made pair and against plain routing: "mcnet-no-keep-source/kvx 1.08" reads
// "without keep-source mcnet runs 8% faster than the baseline would suggest it could".
// The load average is printed with the figures: on a shared machine the ratios, not
// the absolute figures, carry over.
func BenchmarkVXLANAblation(b *testing.B) {
	requireRoot(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		if os.Getenv("CI") == "true" {
			b.Fatal("iperf3 missing")
		}
		b.Skip("iperf3 missing")
	}
	secs, trials := 3, 5
	if s, err := strconv.Atoi(os.Getenv("MCNET_BENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	if n, err := strconv.Atoi(os.Getenv("MCNET_BENCH_TRIALS")); err == nil && n > 0 {
		trials = n
	}
	l := newLab(b)
	for _, role := range []string{"gwa", "gwb"} {
		l.sysctl(role, "net.ipv4.ip_forward", "1")
	}
	client, server, pinned := cpuPins()
	if n := os.Getenv("MCNET_BENCH_NICE"); n != "" {
		// A busy shared machine starves the iperf3 ends (and the softirq work they
		// carry); a raised priority gives the path the CPU it would have alone.
		client = append([]string{"nice", "-n", n}, client...)
		server = append([]string{"nice", "-n", n}, server...)
		pinned += ", both at nice " + n
	}
	srv := exec.Command("ip", append([]string{"netns", "exec", l.ns["podb"]}, append(server, "iperf3", "-s", "-p", "5201")...)...)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	l.waitListening("podb", 5201)
	l.startNodes()
	_, haveEthtool := exec.LookPath("ethtool")

	gws := []string{"gwa", "gwb"}
	peerOf := map[string]string{"gwa": wanB.String(), "gwb": wanA.String()}
	remoteOf := map[string]string{"gwa": "10.2.0.0/16", "gwb": "10.1.0.0/16"}
	tunAddr := map[string]string{"gwa": "198.19.0.1", "gwb": "198.19.0.2"}
	// kvx makes the hand-made pair: a point-to-point VXLAN per gateway (remote set,
	// so no FDB), an address on it, the remote pod CIDR routed through it.
	kvx := func(extra ...string) func() {
		return func() {
			for _, gw := range gws {
				args := []string{"link", "add", "kvx", "type", "vxlan", "id", "77", "dstport", "8472",
					"remote", peerOf[gw], "dev", "wan0", "nolearning"}
				l.ip(gw, append(args, extra...)...)
				l.ip(gw, "link", "set", "kvx", "mtu", "1450", "up")
				l.ip(gw, "addr", "add", tunAddr[gw]+"/30", "dev", "kvx")
			}
			l.ip("gwa", "route", "add", remoteOf["gwa"], "via", tunAddr["gwb"])
			l.ip("gwb", "route", "add", remoteOf["gwb"], "via", tunAddr["gwa"])
		}
	}
	// kvxNAT adds to the hand-made pair a nat chain like keep-source, which turns
	// conntrack on for every packet in the gateways.
	kvxNAT := func() {
		kvx("udpcsum")()
		for _, gw := range gws {
			l.exec(gw, "nft", "add table inet ablation; "+
				"add chain inet ablation post { type nat hook postrouting priority 90; }; "+
				"add rule inet ablation post ip saddr 10.0.0.0/8 ip daddr 10.0.0.0/8 snat ip to ip saddr")
		}
	}
	// kvxRule routes the remote pod CIDR through a table of its own, chosen by a
	// policy rule, as mcnet does.
	kvxRule := func() {
		kvx("udpcsum")()
		for _, gw := range gws {
			l.ip(gw, "route", "del", remoteOf[gw])
		}
		l.ip("gwa", "route", "add", remoteOf["gwa"], "via", tunAddr["gwb"], "table", "77")
		l.ip("gwb", "route", "add", remoteOf["gwb"], "via", tunAddr["gwa"], "table", "77")
		for _, gw := range gws {
			l.ip(gw, "rule", "add", "to", remoteOf[gw], "lookup", "77", "pref", "77")
		}
	}
	kvxDown := func() {
		for _, gw := range gws {
			l.ip(gw, "link", "del", "kvx")
		}
	}
	cleanup := func() {
		for _, role := range []string{"gwa", "gwb", "nodea"} {
			if _, err := l.nodes[role].call(helperRequest{Op: "cleanup"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	// vethGRO turns GRO on or off on every veth of the path.
	vethGRO := func(on string) {
		for _, p := range [][2]string{{"gwa", "pod0"}, {"gwa", "wan0"}, {"gwb", "wan0"}, {"gwb", "pod0"}, {"poda", "eth0"}, {"podb", "eth0"}} {
			l.exec(p[0], "ethtool", "-K", p[1], "gro", on)
		}
	}
	nft := func(args ...string) {
		for _, gw := range gws {
			l.exec(gw, append([]string{"nft"}, args...)...)
		}
	}
	table := (Config{ChainPrefix: "MCNET"}).nftTable()
	withoutChains := func(chains ...string) func() {
		return func() {
			l.applyAll(DriverVXLAN)
			for _, c := range chains {
				nft("delete", "chain", "inet", table, c)
			}
		}
	}
	rpFilter := func(v string) func() {
		return func() {
			l.applyAll(DriverVXLAN)
			for _, gw := range gws {
				l.sysctl(gw, "net.ipv4.conf.all.rp_filter", v)
				l.sysctl(gw, "net.ipv4.conf."+l.cableLink(gw, DriverVXLAN)+".rp_filter", v)
			}
		}
	}
	rpRestore := func() {
		cleanup()
		for _, gw := range gws {
			l.sysctl(gw, "net.ipv4.conf.all.rp_filter", "1")
		}
	}
	direct := func() {
		l.ip("gwa", "route", "add", "10.2.0.0/16", "via", wanB.String())
		l.ip("gwb", "route", "add", "10.1.0.0/16", "via", wanA.String())
	}
	directDown := func() {
		l.ip("gwa", "route", "del", "10.2.0.0/16")
		l.ip("gwb", "route", "del", "10.1.0.0/16")
	}
	wanMTU := func(mtu string) {
		for _, gw := range gws {
			l.ip(gw, "link", "set", "wan0", "mtu", mtu)
		}
	}

	type variant struct {
		name, factor string
		up, down     func()
	}
	variants := []variant{
		{"direct", "plain routes, no tunnel", direct, directDown},
		{"direct-mtu1450", "plain routes over a 1450-byte WAN (the tunnel's MTU, no encapsulation)",
			func() { wanMTU("1450"); direct() }, func() { directDown(); wanMTU("1500") }},
		{"kvx", "hand-made kernel VXLAN pair, outer UDP checksum computed, no filter", kvx("udpcsum"), kvxDown},
		{"kvx-zero-csum", "hand-made pair, zero outer UDP checksum (mcnet's setting)", kvx("noudpcsum"), kvxDown},
		{"kvx-one-srcport", "hand-made pair, one outer UDP source port for every flow", kvx("udpcsum", "srcport", "8472", "8473"), kvxDown},
		{"kvx-conntrack", "hand-made pair plus an identity snat chain (conntrack on every packet)", kvxNAT, func() { nft("delete", "table", "inet", "ablation"); kvxDown() }},
		{"kvx-policy-rule", "hand-made pair routed through a policy rule and a table of its own", kvxRule, func() {
			for _, gw := range gws {
				l.ip(gw, "rule", "del", "pref", "77")
			}
			kvxDown()
		}},
		{"mcnet", "mcnet's VXLAN cable as Apply makes it", func() { l.applyAll(DriverVXLAN) }, cleanup},
		{"mcnet-no-keep-source", "mcnet without the keep-source nat chain (and so without conntrack)", withoutChains(chainKeepSource), cleanup},
		{"mcnet-no-clamp-mss", "mcnet without the clamp-mss forward chain", withoutChains(chainClampMSS), cleanup},
		{"mcnet-no-vxlan-sources", "mcnet without the vxlan-sources input chain", withoutChains(chainVXLANSources), cleanup},
		{"mcnet-tracked-outer", "mcnet with conntrack on its VXLAN packets too (no untracked-in/-out)", withoutChains(chainUntrackedIn, chainUntrackedOut), cleanup},
		{"mcnet-rp-filter-0", "mcnet with reverse-path filtering off", rpFilter("0"), rpRestore},
		{"mcnet-rp-filter-1", "mcnet with strict reverse-path filtering on the cable", rpFilter("1"), rpRestore},
	}
	if haveEthtool == nil {
		variants = append(variants,
			variant{"kvx-veth-gro", "hand-made pair, GRO on every veth", func() { vethGRO("on"); kvx("udpcsum")() }, func() { kvxDown(); vethGRO("off") }},
			variant{"mcnet-veth-gro", "mcnet, GRO on every veth", func() { vethGRO("on"); l.applyAll(DriverVXLAN) }, func() { cleanup(); vethGRO("off") }},
		)
	} else if os.Getenv("CI") == "true" {
		b.Fatal("ethtool missing (the GRO variants need it)")
	} else {
		fmt.Println("vxlan-ablation: GRO variants skipped: no ethtool")
	}
	if only := os.Getenv("MCNET_ABLATION"); only != "" {
		keep := strings.Split(only, ",")
		variants = slices.DeleteFunc(variants, func(v variant) bool { return !slices.Contains(keep, v.name) })
	}

	type sample struct{ gbps, cpuPerGbit float64 }
	results := map[string][]sample{}
	var loads []string
	for range b.N { // -benchtime 1x: the figures come from iperf3, not b.N
		for trial := range trials {
			loads = append(loads, machine.LoadAverage())
			// Each trial starts one variant later, so no variant always runs at
			// the same point of a trial (after the same neighbour, as load builds).
			for i := range variants {
				v := variants[(i+trial)%len(variants)]
				v.up()
				l.waitPing("poda", podB.String())
				for _, streams := range []int{1, 4} {
					gbps, cpu := l.iperfProcCPU(client, streams, secs)
					k := fmt.Sprintf("%s %d", v.name, streams)
					results[k] = append(results[k], sample{gbps, cpu})
				}
				v.down()
			}
		}
	}
	loads = append(loads, machine.LoadAverage())

	median := func(k string, f func(sample) float64) (med, lo, hi float64) {
		var v []float64
		for _, s := range results[k] {
			v = append(v, f(s))
		}
		if len(v) == 0 {
			return 0, 0, 0
		}
		slices.Sort(v)
		return v[len(v)/2], v[0], v[len(v)-1]
	}
	gbps := func(s sample) float64 { return s.gbps }
	fmt.Printf("vxlan-ablation: %d interleaved trials of %d s per variant and stream count; %s; 1-minute load average at each trial start: %s\n",
		trials, secs, pinned, strings.Join(loads, " "))
	fmt.Printf("vxlan-ablation %-24s %7s %8s %8s %8s %11s %8s %8s  %s\n", "variant", "streams", "median", "min", "max", "CPU-s/Gbit", "/kvx", "/direct", "factor")
	for _, v := range variants {
		for _, streams := range []int{1, 4} {
			k := fmt.Sprintf("%s %d", v.name, streams)
			med, lo, hi := median(k, gbps)
			cpu, _, _ := median(k, func(s sample) float64 { return s.cpuPerGbit })
			base, _, _ := median(fmt.Sprintf("kvx %d", streams), gbps)
			dir, _, _ := median(fmt.Sprintf("direct %d", streams), gbps)
			fmt.Printf("vxlan-ablation %-24s %7d %8.2f %8.2f %8.2f %11.3f %8s %8s  %s\n", v.name, streams, med, lo, hi, cpu, ratioOf(med, base), ratioOf(med, dir), v.factor)
			b.ReportMetric(med, fmt.Sprintf("%s-%dstream-Gbit/s", v.name, streams))
			b.ReportMetric(cpu, fmt.Sprintf("%s-%dstream-CPU-s/Gbit", v.name, streams))
			if base > 0 {
				b.ReportMetric(med/base, fmt.Sprintf("%s/kvx-%dstream-ratio", v.name, streams))
			}
		}
	}
}

// iperfProcCPU runs iperf3 like iperfWith and returns Gbit/s received and the CPU
// seconds per Gbit the path cost: what the two iperf3 processes spent (iperf3's own
// rusage figures, host_total and remote_total) plus the machine's softirq time over
// the run. On veths the forwarding path (routing, filter, encapsulation) runs in
// softirq, which the kernel accounts apart from the process it interrupted, so
// the two together are the path's cost; unlike machine-wide busy time they leave out
// the other work on a shared machine, but for whatever softirq work it does.
func (l *lab) iperfProcCPU(pin []string, streams, secs int) (gbps, cpuPerGbit float64) {
	l.tb.Helper()
	soft0 := softirqSeconds()
	args := append(slices.Clone(pin), "iperf3", "-c", podB.String(), "-p", "5201", "-J", "-O", "1",
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams))
	out, err := l.try("poda", args...)
	if err != nil {
		l.tb.Fatalf("iperf3 -P %d: %v\n%s", streams, err, out)
	}
	var rep struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			CPU struct {
				Host   float64 `json:"host_total"`
				Remote float64 `json:"remote_total"`
			} `json:"cpu_utilization_percent"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		l.tb.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	soft := softirqSeconds() - soft0
	gbps = rep.End.SumReceived.BitsPerSecond / 1e9
	if gbps > 0 {
		// -O 1 adds a second that iperf3 does not count: charge softirq over secs+1.
		cpuPerGbit = (rep.End.CPU.Host+rep.End.CPU.Remote)/100/gbps + soft/(gbps*float64(secs+1))
	}
	return gbps, cpuPerGbit
}

// softirqSeconds is the machine's softirq time so far (the seventh field of the first
// line of /proc/stat, in USER_HZ ticks), in seconds.
func softirqSeconds() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[7], 64)
	return v / 100
}

// ratioOf formats a/b, or "-" without a base.
func ratioOf(a, b float64) string {
	if b == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
