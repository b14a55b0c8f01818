//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
)

// remapFleet is four VXLAN clusters under one globalnet pool: the first two built with
// the same pod and service CIDRs (so both are remapped), the last two with their own
// (so neither is): a mixed fleet, where the pair c1→c2 crosses two remaps and c3→c4
// none, over paths of the same shape (worker pod, gateway, VXLAN cable, gateway,
// worker pod).
func remapFleet() *mcnetv1.ClusterSet {
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableVXLAN)
	cs.Spec.Globalnet = &mcnetv1.GlobalnetSpec{CIDR: overlapPool}
	for i := range 2 {
		cs.Spec.Clusters[i].PodCIDRs = []string{overlapPodCIDR}
		cs.Spec.Clusters[i].ServiceCIDRs = []string{overlapServiceCIDR}
	}
	return cs
}

// BenchmarkRemap measures what globalnet's 1:1 prefix remap costs a cross-cluster
// path: TCP throughput, the time to a connection's first answer (SYN to SYN-ACK, as
// the client's connect returns) and the round trip of a small message on an open
// connection, from a worker pod of c1 to one of c2 by its global address (source
// mapped at c1's gateway, destination at c2's) against the same measures from c3 to
// c4 by real addresses, in one mixed fleet, interleaved trial by trial. Before
// measuring it checks each path is what it claims: the remapped server sees the
// client's global address, the plain one its real address. Target: remapped/plain
// throughput ≥ 0.95.
func BenchmarkRemap(b *testing.B) {
	ctx := b.Context()
	cs := remapFleet()
	l := startConnected(b, cs, 2)
	cl := l.Clusters()
	ranges := keptRanges(b, l.dir, cs.Name)
	for i, c := range cl {
		if _, ok := ranges[c.Name]; ok != (i < 2) {
			b.Fatalf("%s remapped=%v in the Fleet table, want %v: %v", c.Name, ok, i < 2, ranges)
		}
	}
	podCIDR := netip.MustParsePrefix(overlapPodCIDR)
	addrOf := func(p *lab.Pod) netip.Addr { // as the other clusters reach it
		if r, ok := ranges[p.Node.Cluster.Name]; ok {
			return mcnetv1.MapPrefix(p.IP, podCIDR, r.pod)
		}
		return p.IP
	}
	const port, echo, web = 5201, 7007, 8080
	type path struct {
		name     string
		cli, srv *lab.Pod
		gbps     []float64
		connect  []time.Duration
		rtt      []time.Duration
	}
	var paths []*path
	for _, p := range []struct {
		name     string
		from, to *lab.Cluster
	}{{"remapped", cl[0], cl[1]}, {"plain", cl[2], cl[3]}} {
		srv, err := l.AddPod(ctx, p.to.Workers()[0], lab.PodOptions{Name: "bench-server"})
		if err != nil {
			b.Fatal(err)
		}
		cli, err := l.AddPod(ctx, p.from.Workers()[0], lab.PodOptions{Name: "bench-client"})
		if err != nil {
			b.Fatal(err)
		}
		for _, serve := range []func() error{
			func() error { return srv.StartIperf3(ctx, port) },
			// Connects and round trips are timed against a TCP echo server: iperf3
			// re-arms its listener after each test.
			func() error { return srv.ServeEcho(ctx, echo) },
			func() error { return srv.ServeHTTP(ctx, web) },
		} {
			if err := serve(); err != nil {
				b.Fatal(err)
			}
		}
		url := "http://" + net.JoinHostPort(addrOf(srv).String(), strconv.Itoa(web)) + "/"
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			return getFrom(ctx, cli, srv, url, addrOf(cli))
		}); err != nil {
			b.Fatalf("%s path %s -> %s: %v", p.name, cli, srv, err)
		}
		paths = append(paths, &path{name: p.name, cli: cli, srv: srv})
	}

	const trials, connects, rounds = 5, 20, 200
	for range b.N {
		for i := range trials {
			// Alternate which path goes first, so neither always follows the other.
			order := slices.Clone(paths)
			if i%2 == 1 {
				slices.Reverse(order)
			}
			for _, p := range order {
				addr := addrOf(p.srv).String()
				out, err := p.cli.Exec(ctx, "iperf3", "-c", addr, "-p", strconv.Itoa(port), "-t", "3", "-O", "1", "-J")
				if err != nil {
					b.Fatalf("iperf3 %s %s -> %s: %v\n%s", p.name, p.cli, addr, err, out)
				}
				bps, err := iperfReceived(out)
				if err != nil {
					b.Fatal(err)
				}
				p.gbps = append(p.gbps, bps/1e9)
				for range connects {
					start := time.Now()
					c, err := p.cli.Dial(ctx, "tcp", net.JoinHostPort(addr, strconv.Itoa(echo)))
					if err != nil {
						b.Fatalf("connect %s to %s: %v", p.name, addr, err)
					}
					p.connect = append(p.connect, time.Since(start))
					c.Close()
				}
				rtt, err := echoRounds(ctx, p.cli, net.JoinHostPort(addr, strconv.Itoa(echo)), rounds)
				if err != nil {
					b.Fatalf("%s round trips to %s: %v", p.name, addr, err)
				}
				p.rtt = append(p.rtt, rtt...)
			}
		}
	}
	med := func(v []float64) float64 { v = slices.Sorted(slices.Values(v)); return v[len(v)/2] }
	fmt.Printf("remap: %s -> %s (both remapped, by global address) against %s -> %s (neither), VXLAN cables, %d interleaved trials (iperf3 3 s, %d connects, %d round trips of 64 bytes each)\n",
		cl[0].Name, cl[1].Name, cl[2].Name, cl[3].Name, trials, connects, rounds)
	for _, p := range paths {
		c50, c99 := percentiles(p.connect)
		r50, r99 := percentiles(p.rtt)
		fmt.Printf("remap: %-8s %s -> %-15s throughput median %.2f Gbit/s (min %.2f, max %.2f); connect p50 %s p99 %s; round trip p50 %s p99 %s\n",
			p.name, p.cli.Node.Cluster.Name, addrOf(p.srv), med(p.gbps), slices.Min(p.gbps), slices.Max(p.gbps),
			c50.Round(time.Microsecond), c99.Round(time.Microsecond), r50.Round(time.Microsecond), r99.Round(time.Microsecond))
		b.ReportMetric(med(p.gbps), p.name+"-Gbit/s")
		b.ReportMetric(float64(c50.Microseconds()), p.name+"-connect-p50-µs")
		b.ReportMetric(float64(c99.Microseconds()), p.name+"-connect-p99-µs")
		b.ReportMetric(float64(r50.Microseconds()), p.name+"-rtt-p50-µs")
		b.ReportMetric(float64(r99.Microseconds()), p.name+"-rtt-p99-µs")
	}
	ratio := med(paths[0].gbps) / med(paths[1].gbps)
	r0, _ := percentiles(paths[0].rtt)
	r1, _ := percentiles(paths[1].rtt)
	b.ReportMetric(ratio, "remapped/plain-ratio")
	b.ReportMetric(float64((r0 - r1).Microseconds()), "remap-added-rtt-p50-µs")
	fmt.Printf("remap: remapped / plain throughput %.2f (target >= 0.95); the remap adds %s to a round trip (p50)\n", ratio, (r0 - r1).Round(time.Microsecond))
}

// echoRounds opens one connection from cli to an echo server at addr and times n
// round trips of a 64-byte message on it.
func echoRounds(ctx context.Context, cli *lab.Pod, addr string, n int) ([]time.Duration, error) {
	c, err := cli.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		return nil, err
	}
	msg, buf := make([]byte, 64), make([]byte, 64)
	out := make([]time.Duration, 0, n)
	for i := range n {
		msg[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		out = append(out, time.Since(start))
		if buf[0] != msg[0] {
			return nil, fmt.Errorf("echo answered %d, want %d", buf[0], msg[0])
		}
	}
	return out, nil
}
