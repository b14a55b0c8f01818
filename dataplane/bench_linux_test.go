package dataplane

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"

	"github.com/mcnet-io/mcnet/internal/machine"
)

// BenchmarkDataplaneThroughput measures iperf3 pod to pod (poda -> podb) across the two
// gateway namespaces of the lab, one stream and four, for: plain routing without a
// tunnel, the mcnet vxlan cable, the mcnet wireguard cable (userspace here unless the
// kernel has the module) and a standalone wireguard-go configured by wg(8) between the
// same namespaces, all in one run.
//
// The modes are interleaved (direct, vxlan, wireguard, wireguard-go, direct, …) over
// MCNET_BENCH_TRIALS trials (default 5), so a burst of load elsewhere on the machine
// hits every mode alike; each figure is the median with its spread, and the ratios are
// of medians. The iperf3 client runs on CPU 0 and the server on CPU 1 (taskset) where
// there are two CPUs, so the two ends do not migrate between runs. Beside each figure:
// the CPU it cost, machine-wide busy time from /proc/stat per Gbit carried, which tells a
// CPU-bound four-stream figure from a path-bound one. It prints lines such as
//
//	dataplane vxlan/direct 1-stream ratio 0.93
//
// Figures are reported, never asserted: a noisy machine must not fail a build.
func BenchmarkDataplaneThroughput(b *testing.B) {
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
	srv := exec.Command("ip", append([]string{"netns", "exec", l.ns["podb"]}, append(server, "iperf3", "-s", "-p", "5201")...)...)
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	l.waitListening("podb", 5201)
	l.startNodes()

	type mode struct {
		name     string
		up, down func()
	}
	cleanup := func() {
		for _, role := range []string{"gwa", "gwb", "nodea"} {
			if _, err := l.nodes[role].call(helperRequest{Op: "cleanup"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	modes := []mode{
		{name: "direct", // the same namespaces with plain routes, no tunnel
			up: func() {
				l.ip("gwa", "route", "add", "10.2.0.0/16", "via", wanB.String())
				l.ip("gwb", "route", "add", "10.1.0.0/16", "via", wanA.String())
			},
			down: func() {
				l.ip("gwa", "route", "del", "10.2.0.0/16")
				l.ip("gwb", "route", "del", "10.1.0.0/16")
			}},
		{name: "vxlan", up: func() { l.applyAll(DriverVXLAN) }, down: cleanup},
		{name: "wireguard", up: func() { l.applyAll(DriverWireGuard) }, down: cleanup},
	}
	var stopWG func()
	if stop, ok := l.standaloneWireGuardGo(); ok {
		stop()
		modes = append(modes, mode{name: "wireguard-go",
			up:   func() { stopWG, _ = l.standaloneWireGuardGo() },
			down: func() { stopWG() }})
	}

	type sample struct{ gbps, cpuPerGbit float64 }
	results := map[string][]sample{} // "vxlan 4" → trials
	for range b.N {                  // -benchtime 1x: one pass; the figures come from iperf3, not b.N
		for range trials {
			for _, m := range modes {
				m.up()
				l.waitPing("poda", podB.String())
				for _, streams := range []int{1, 4} {
					gbps, cpu := l.iperfCPU(client, streams, secs)
					k := fmt.Sprintf("%s %d", m.name, streams)
					results[k] = append(results[k], sample{gbps, cpu})
				}
				m.down()
			}
		}
	}

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
	fmt.Printf("dataplane: %d interleaved trials of %d s per mode and stream count; %s; CPU is machine-wide busy time per Gbit carried\n", trials, secs, pinned)
	fmt.Printf("dataplane %-14s %7s %9s %9s %9s %14s\n", "mode", "streams", "median", "min", "max", "CPU-s/Gbit")
	for _, m := range modes {
		for _, streams := range []int{1, 4} {
			k := fmt.Sprintf("%s %d", m.name, streams)
			med, lo, hi := median(k, gbps)
			cpu, _, _ := median(k, func(s sample) float64 { return s.cpuPerGbit })
			fmt.Printf("dataplane %-14s %7d %9.2f %9.2f %9.2f %14.3f  Gbit/s\n", m.name, streams, med, lo, hi, cpu)
			b.ReportMetric(med, fmt.Sprintf("%s-%dstream-Gbit/s", m.name, streams))
			b.ReportMetric(cpu, fmt.Sprintf("%s-%dstream-CPU-s/Gbit", m.name, streams))
		}
	}
	ratio := func(a, base string) {
		for _, streams := range []int{1, 4} {
			ma, _, _ := median(fmt.Sprintf("%s %d", a, streams), gbps)
			mb, _, _ := median(fmt.Sprintf("%s %d", base, streams), gbps)
			if ma == 0 || mb == 0 {
				continue
			}
			fmt.Printf("dataplane %s/%s %d-stream ratio %.2f\n", a, base, streams, ma/mb)
			b.ReportMetric(ma/mb, fmt.Sprintf("%s/%s-%dstream-ratio", a, base, streams))
		}
	}
	ratio("vxlan", "direct")
	ratio("wireguard", "wireguard-go")
	ratio("wireguard", "direct")
	ratio("wireguard-go", "direct")
}

// cpuPins returns command prefixes that pin the iperf3 client to CPU 0 and the server
// to CPU 1, and says so; with one CPU or no taskset, none.
func cpuPins() (client, server []string, say string) {
	ts, err := exec.LookPath("taskset")
	if err != nil {
		return nil, nil, "iperf3 unpinned (no taskset)"
	}
	if err := exec.Command(ts, "-c", "1", "true").Run(); err != nil {
		return nil, nil, "iperf3 unpinned (one CPU)"
	}
	return []string{ts, "-c", "0"}, []string{ts, "-c", "1"}, "iperf3 client pinned to CPU 0, server to CPU 1"
}

// iperfCPU runs iperf(streams, secs) with the client command prefixed by pin, and
// returns Gbit/s received and the machine's busy CPU seconds per Gbit carried.
func (l *lab) iperfCPU(pin []string, streams, secs int) (gbps, cpuPerGbit float64) {
	before := machine.BusySeconds()
	gbps = l.iperfWith(pin, streams, secs)
	busy := machine.BusySeconds() - before
	if gbps > 0 {
		// -O 1 adds a second that iperf3 does not count: charge the CPU over secs+1.
		cpuPerGbit = busy / (gbps * float64(secs+1))
	}
	return gbps, cpuPerGbit
}

// iperfWith runs an iperf3 client in poda, its command prefixed by pin (taskset),
// against podb and returns Gbit/s received.
func (l *lab) iperfWith(pin []string, streams, secs int) float64 {
	l.tb.Helper()
	// -O 1 drops the first second (slow start, the WireGuard handshake).
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
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		l.tb.Fatalf("iperf3 output: %v\n%s", err, out)
	}
	return rep.End.SumReceived.BitsPerSecond / 1e9
}

// waitListening polls until a TCP port listens inside role's namespace.
func (l *lab) waitListening(role string, port int) {
	l.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := l.try(role, "ss", "-ltnH", "sport", "=", ":"+strconv.Itoa(port))
		if strings.TrimSpace(out) != "" {
			return
		}
		if time.Now().After(deadline) {
			l.tb.Fatalf("nothing listens on port %d in %s", port, role)
		}
	}
}

// standaloneWireGuardGo runs the pinned wireguard-go binary in both gateways,
// configured by wg(8) like the mcnet cable (same MTU, port kind, peers), and routes
// the pod CIDRs through it. ok is false (with a note) when the binary is not built.
func (l *lab) standaloneWireGuardGo() (stop func(), ok bool) {
	l.tb.Helper()
	bin := os.Getenv("MCNET_WIREGUARD_GO")
	if bin == "" {
		matches, _ := filepath.Glob("../bin/wireguard-go/*/wireguard-go")
		if len(matches) == 0 {
			fmt.Println("dataplane wireguard-go skipped: run hack/build-tools.sh wireguard-go")
			return nil, false
		}
		bin = matches[len(matches)-1]
	}
	var procs []*exec.Cmd
	var socks []string
	stop = func() {
		for _, p := range procs {
			// SIGTERM lets wireguard-go remove its TUN and UAPI socket.
			p.Process.Signal(syscall.SIGTERM)
			t := time.AfterFunc(5*time.Second, func() { p.Process.Kill() })
			p.Wait()
			t.Stop()
		}
		procs = nil
		for _, s := range socks {
			os.Remove(s) // in case it had to be killed
		}
	}
	l.tb.Cleanup(stop)
	type side struct {
		role, peer string
		peerWAN    string
		local      string // pod CIDR routed to the peer
		key        wgtypes.Key
	}
	ka, _ := wgtypes.GeneratePrivateKey()
	kb, _ := wgtypes.GeneratePrivateKey()
	sides := []side{
		{role: "gwa", peer: "gwb", peerWAN: wanB.String(), local: "10.2.0.0/16", key: ka},
		{role: "gwb", peer: "gwa", peerWAN: wanA.String(), local: "10.1.0.0/16", key: kb},
	}
	pub := map[string]wgtypes.Key{"gwa": ka.PublicKey(), "gwb": kb.PublicKey()}
	dir := l.tb.TempDir()
	for _, s := range sides {
		name := l.prefix[s.role] + "-sw" // unique: UAPI sockets are host-global
		p := exec.Command("ip", "netns", "exec", l.ns[s.role], bin, "-f", name)
		p.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
		if err := p.Start(); err != nil {
			l.tb.Fatal(err)
		}
		procs = append(procs, p)
		socks = append(socks, "/var/run/wireguard/"+name+".sock")
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := os.Stat("/var/run/wireguard/" + name + ".sock"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				l.tb.Fatalf("wireguard-go %s did not start", name)
			}
		}
		keyFile := filepath.Join(dir, s.role+".key")
		if err := os.WriteFile(keyFile, []byte(s.key.String()), 0o600); err != nil {
			l.tb.Fatal(err)
		}
		l.exec(s.role, "wg", "set", name, "listen-port", "51830", "private-key", keyFile,
			"peer", pub[s.peer].String(), "endpoint", s.peerWAN+":51830", "allowed-ips", s.local,
			"persistent-keepalive", "25")
		l.ip(s.role, "link", "set", name, "mtu", "1420", "up")
		l.ip(s.role, "route", "add", s.local, "dev", name)
	}
	return stop, true
}
