package dataplane

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// BenchmarkDataplaneThroughput measures iperf3 pod to pod (poda -> podb) across the two
// gateway namespaces of the lab, one stream and four, for: plain routing without a
// tunnel, the mcnet vxlan cable, the mcnet wireguard cable (userspace here unless the
// kernel has the module) and a standalone wireguard-go configured by wg(8) between the
// same namespaces, all in one run. It prints one line per figure, e.g.
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
	secs := 3
	if s, err := strconv.Atoi(os.Getenv("MCNET_BENCH_SECONDS")); err == nil && s > 0 {
		secs = s
	}
	l := newLab(b)
	for _, role := range []string{"gwa", "gwb"} {
		l.sysctl(role, "net.ipv4.ip_forward", "1")
	}
	server := exec.Command("ip", "netns", "exec", l.ns["podb"], "iperf3", "-s", "-p", "5201")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { server.Process.Kill(); server.Wait() })
	l.waitListening("podb", 5201)

	type result struct{ one, four float64 } // Gbit/s
	results := map[string]result{}
	measure := func(mode string) {
		l.waitPing("poda", podB.String())
		r := result{one: l.iperf(1, secs), four: l.iperf(4, secs)}
		results[mode] = r
		fmt.Printf("dataplane %s 1-stream %.2f Gbit/s\ndataplane %s 4-stream %.2f Gbit/s\n", mode, r.one, mode, r.four)
	}

	for range b.N { // -benchtime 1x: one pass; the figures come from iperf3, not b.N
		// Direct: the same namespaces with plain routes, no tunnel.
		l.ip("gwa", "route", "add", "10.2.0.0/16", "via", wanB.String())
		l.ip("gwb", "route", "add", "10.1.0.0/16", "via", wanA.String())
		measure("direct")
		l.ip("gwa", "route", "del", "10.2.0.0/16")
		l.ip("gwb", "route", "del", "10.1.0.0/16")

		l.startNodes()
		for _, d := range []Driver{DriverVXLAN, DriverWireGuard} {
			l.applyAll(d)
			measure(string(d))
			for _, role := range []string{"gwa", "gwb", "nodea"} {
				if _, err := l.nodes[role].call(helperRequest{Op: "cleanup"}); err != nil {
					b.Fatal(err)
				}
			}
		}

		if stop, ok := l.standaloneWireGuardGo(); ok {
			measure("wireguard-go")
			stop()
		}
	}

	ratio := func(a, base string) {
		ra, okA := results[a]
		rb, okB := results[base]
		if !okA || !okB || rb.one == 0 || rb.four == 0 {
			return
		}
		fmt.Printf("dataplane %s/%s 1-stream ratio %.2f\n", a, base, ra.one/rb.one)
		fmt.Printf("dataplane %s/%s 4-stream ratio %.2f\n", a, base, ra.four/rb.four)
	}
	ratio("vxlan", "direct")
	ratio("wireguard", "wireguard-go")
	ratio("wireguard", "direct")
	ratio("wireguard-go", "direct")
	for mode, r := range results {
		b.ReportMetric(r.one, mode+"-1stream-Gbit/s")
		b.ReportMetric(r.four, mode+"-4stream-Gbit/s")
	}
}

// iperf runs an iperf3 client in poda against podb and returns Gbit/s received.
func (l *lab) iperf(streams, secs int) float64 {
	l.tb.Helper()
	// -O 1 drops the first second (slow start, the WireGuard handshake).
	out, err := l.try("poda", "iperf3", "-c", podB.String(), "-p", "5201", "-J", "-O", "1",
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(streams))
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
