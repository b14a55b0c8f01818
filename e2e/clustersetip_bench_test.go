//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
)

// BenchmarkClusterSetIP measures what the ClusterSetIP costs against reaching the
// exporting cluster's own ClusterIP, between the same two pods of two clusters (one
// exports an iperf3 server, the other's worker pod is the client), interleaved trial
// by trial: TCP throughput (the VIP's ratio to the ClusterIP's, target ≥ 0.95) and
// the time to a TCP connection's first answer (SYN to SYN-ACK, as the client's
// connect returns), whose difference is what the extra hop of translation in the
// importing cluster's kube-proxy adds to a first packet.
func BenchmarkClusterSetIP(b *testing.B) {
	ctx := b.Context()
	l := startConnected(b, connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN), 2)
	exp, imp := l.Clusters()[0], l.Clusters()[1]
	const ns, name, port, echo = "default", "bench", 5201, 7007
	srv, err := l.AddPod(ctx, exp.Workers()[0], lab.PodOptions{Name: "iperf-server", Labels: map[string]string{"app": name}})
	if err != nil {
		b.Fatal(err)
	}
	cli, err := l.AddPod(ctx, imp.Workers()[0], lab.PodOptions{Name: "iperf-client"})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := exp.CreateService(ctx, lab.ServiceOptions{Name: name, Namespace: ns, Selector: map[string]string{"app": name}, Ports: map[int32]int32{port: port, echo: echo}})
	if err != nil {
		b.Fatal(err)
	}
	if err := mcsClient(b, exp).Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}); err != nil {
		b.Fatal(err)
	}
	if err := srv.StartIperf3(ctx, port); err != nil {
		b.Fatal(err)
	}
	// Connects are timed against a TCP echo server: iperf3 re-arms its listener after
	// each test, and a connect in that moment is refused.
	if err := srv.ServeEcho(ctx, echo); err != nil {
		b.Fatal(err)
	}
	var vip string
	importer := mcsClient(b, imp)
	if err := lab.Eventually(ctx, 2*time.Minute, func(ctx context.Context) error {
		var si mcsv1alpha1.ServiceImport
		if err := importer.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &si); err != nil {
			return err
		}
		if len(si.Spec.IPs) == 0 {
			return fmt.Errorf("ServiceImport %s/%s in %s has no ClusterSetIP yet", ns, name, imp.Name)
		}
		vip = si.Spec.IPs[0]
		// The VIP answers once the importing cluster's kube-proxy has its endpoints.
		c, err := cli.Dial(ctx, "tcp", net.JoinHostPort(vip, fmt.Sprint(port)))
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		b.Fatal(err)
	}
	targets := []struct{ name, addr string }{{"clustersetip", vip}, {"clusterip", svc.Spec.ClusterIP}}

	const trials, connects = 5, 20
	gbps := map[string][]float64{}
	connect := map[string][]time.Duration{}
	for range b.N {
		for range trials {
			for _, t := range targets {
				out, err := cli.Exec(ctx, "iperf3", "-c", t.addr, "-p", fmt.Sprint(port), "-t", "3", "-O", "1", "-J")
				if err != nil {
					b.Fatalf("iperf3 to %s %s: %v\n%s", t.name, t.addr, err, out)
				}
				bps, err := iperfReceived(out)
				if err != nil {
					b.Fatal(err)
				}
				gbps[t.name] = append(gbps[t.name], bps/1e9)
				for range connects {
					start := time.Now()
					c, err := cli.Dial(ctx, "tcp", net.JoinHostPort(t.addr, fmt.Sprint(echo)))
					if err != nil {
						b.Fatalf("connect to %s %s: %v", t.name, t.addr, err)
					}
					connect[t.name] = append(connect[t.name], time.Since(start))
					c.Close()
				}
			}
		}
	}
	med := func(v []float64) float64 { v = slices.Sorted(slices.Values(v)); return v[len(v)/2] }
	pct := func(v []time.Duration, q float64) time.Duration {
		v = slices.Sorted(slices.Values(v))
		return v[min(len(v)-1, int(q*float64(len(v))))]
	}
	fmt.Printf("clustersetip: %s -> %s over a VXLAN cable, %d interleaved trials (iperf3 3 s, %d connects each)\n", imp.Name, exp.Name, trials, connects)
	for _, t := range targets {
		g := gbps[t.name]
		fmt.Printf("clustersetip: %-12s %-15s throughput median %.2f Gbit/s (min %.2f, max %.2f); connect p50 %s p99 %s\n", t.name, t.addr,
			med(g), slices.Min(g), slices.Max(g), pct(connect[t.name], 0.5).Round(time.Microsecond), pct(connect[t.name], 0.99).Round(time.Microsecond))
		b.ReportMetric(med(g), t.name+"-Gbit/s")
		b.ReportMetric(float64(pct(connect[t.name], 0.5).Microseconds()), t.name+"-connect-p50-µs")
		b.ReportMetric(float64(pct(connect[t.name], 0.99).Microseconds()), t.name+"-connect-p99-µs")
	}
	ratio := med(gbps["clustersetip"]) / med(gbps["clusterip"])
	added := pct(connect["clustersetip"], 0.5) - pct(connect["clusterip"], 0.5)
	b.ReportMetric(ratio, "vip/clusterip-ratio")
	b.ReportMetric(float64(added.Microseconds()), "vip-added-connect-p50-µs")
	fmt.Printf("clustersetip: VIP / ClusterIP throughput %.2f (target >= 0.95); the VIP adds %s to a connection's first answer (p50)\n", ratio, added.Round(time.Microsecond))
}
