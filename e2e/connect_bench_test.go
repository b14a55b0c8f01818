package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/agent"
)

// leaseHolder returns the node holding a cluster's gateway Lease.
func leaseHolder(ctx context.Context, c *lab.Cluster) (string, error) {
	lease, err := c.Client.CoordinationV1().Leases(mcnetv1.SystemNamespace).Get(ctx, agent.LeaseName, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		return "", fmt.Errorf("cluster %s: gateway Lease has no holder", c.Name)
	}
	return *lease.Spec.HolderIdentity, nil
}

// failover breaks the active gateway of c with breakGW and returns the time from then
// to the first successful HTTP exchange from cli to srv once another node holds the
// Lease, and that node. (A VXLAN cable lives in the kernel and keeps carrying traffic
// after its process dies, so traffic alone does not show that a standby took over.)
func failover(ctx context.Context, c *lab.Cluster, cli, srv *lab.Pod, breakGW func(ctx context.Context, node string) error) (time.Duration, string, error) {
	old, err := leaseHolder(ctx, c)
	if err != nil {
		return 0, "", err
	}
	url := "http://" + net.JoinHostPort(srv.IP.String(), "8080") + "/"
	start := time.Now()
	if err := breakGW(ctx, old); err != nil {
		return 0, "", err
	}
	var took time.Duration
	var holder string
	err = poll(ctx, time.Minute, 50*time.Millisecond, func(ctx context.Context) error {
		if holder == "" || holder == old {
			h, err := leaseHolder(ctx, c)
			if err != nil {
				return err
			}
			if h == old {
				return fmt.Errorf("%s still holds the Lease", old)
			}
			holder = h
		}
		actx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		if err := get(actx, cli, srv, url); err != nil {
			return err
		}
		took = time.Since(start)
		return nil
	})
	if err != nil {
		return 0, "", err
	}
	return took, holder, nil
}

// poll is lab.Eventually at a fixed interval, for conditions whose timing is
// measured.
func poll(ctx context.Context, timeout, interval time.Duration, cond func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		err := cond(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-tick.C:
		}
	}
}

// iperf measures TCP throughput from cli to srv in bit/s.
func iperf(ctx context.Context, cli, srv *lab.Pod, port int) (float64, error) {
	if err := srv.StartIperf3(ctx, port); err != nil {
		return 0, err
	}
	out, err := cli.Exec(ctx, "iperf3", "-c", srv.IP.String(), "-p", fmt.Sprint(port), "-t", "3", "-J")
	if err != nil {
		return 0, fmt.Errorf("iperf3 %s -> %s: %w\n%s", cli, srv, err, out)
	}
	return iperfReceived(out)
}

// iperfReceived reads the receiver's bit rate from iperf3 -J output.
func iperfReceived(out string) (float64, error) {
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w\n%s", err, out)
	}
	return r.End.SumReceived.BitsPerSecond, nil
}

// BenchmarkConnect brings up three clusters of three nodes (two gateways, one worker)
// preferring VXLAN, VXLAN and WireGuard, and prints: convergence (with the first two
// connected, from applying the third cluster's rendered tree, and the broker and
// member changes the new render brings, to every connection of the fleet connected),
// throughput worker pod to worker pod through each driver as a ratio of the lab's
// plain routed path inside a cluster. Failover is BenchmarkFailover's: the gap in a
// continuous stream until the standby carries it, over repeated trials.
func BenchmarkConnect(b *testing.B) {
	labtest.RequireRoot(b)
	// The figures are printed; the loop's own time means nothing. (b.Loop fails a
	// benchmark that stops its timer without starting it again.)
	for b.Loop() {
		ctx := b.Context()
		cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard)
		opts, err := fleetlab.LabOptions(cs, 3)
		if err != nil {
			b.Fatal(err)
		}
		for i := range opts.Clusters {
			opts.Clusters[i].Gateways = 2
		}
		lb := labtest.Start(b, opts)
		c1, c2, c3 := lb.Clusters()[0], lb.Clusters()[1], lb.Clusters()[2]

		first := cs.DeepCopy()
		first.Spec.Clusters = first.Spec.Clusters[:2]
		l := &connectedLab{Lab: lb, fleet: first, dir: filepath.Join(b.TempDir(), "fleet-repo"), only: []*lab.Cluster{c1, c2}}
		if err := installMembers(ctx, lb, first, l.dir); err != nil {
			b.Fatal(err)
		}
		if err := l.waitConnected(ctx, 2*time.Minute); err != nil {
			b.Fatal(err)
		}

		// The new cluster joins: its tree, and the broker and member trees of the new
		// render, applied in Flux's order.
		start := time.Now()
		l.fleet, l.dir, l.only = cs, filepath.Join(b.TempDir(), "fleet-repo-2"), nil
		if err := installMembers(ctx, lb, cs, l.dir); err != nil {
			b.Fatal(err)
		}
		if err := poll(ctx, 2*time.Minute, 200*time.Millisecond, l.connected); err != nil {
			b.Fatal(err)
		}
		fmt.Printf("convergence (new cluster %s applied to all its tunnels connected everywhere): %.2f s\n", c3.Name, time.Since(start).Seconds())
		if err := fleetlab.Wait(ctx, lb, time.Minute); err != nil {
			b.Fatal(err)
		}

		servers, clients := serveOnWorkers(b, lb)
		plainSrv, err := lb.AddPod(ctx, c1.Gateways()[0], lab.PodOptions{Name: "iperf-plain"})
		if err != nil {
			b.Fatal(err)
		}
		plain, err := iperf(ctx, clients[c1.Name], plainSrv, 5201)
		if err != nil {
			b.Fatal(err)
		}
		vx, err := iperf(ctx, clients[c1.Name], servers[c2.Name], 5202)
		if err != nil {
			b.Fatal(err)
		}
		wg, err := iperf(ctx, clients[c1.Name], servers[c3.Name], 5203)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("throughput plain routed pod to pod: %.2f Gbit/s\n", plain/1e9)
		fmt.Printf("throughput ratio vxlan/plain: %.2f (%.2f Gbit/s)\n", vx/plain, vx/1e9)
		fmt.Printf("throughput ratio wireguard/plain: %.2f (%.2f Gbit/s)\n", wg/plain, wg/1e9)
	}
}
