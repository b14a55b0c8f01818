//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/fleet"
)

// TestFiveClusters brings up five clusters of three nodes (two gateways each, two
// clusters behind NAT) and checks that every gateway reaches every other cluster's
// gateways at their public addresses, seeing the sender's public address, and that a
// Service works in every cluster.
func TestFiveClusters(t *testing.T) {
	ctx := t.Context()
	var opts lab.Options
	for i, name := range []string{"c1", "c2", "c3", "c4", "c5"} {
		opts.Clusters = append(opts.Clusters, lab.ClusterOptions{Name: name, Nodes: 3, Gateways: 2, BehindNAT: i >= 3})
	}
	l := labtest.Start(t, opts)

	type gw struct {
		node *lab.Node
		pod  *lab.Pod
	}
	var gws []gw
	for _, c := range l.Clusters() {
		for _, n := range c.Gateways() {
			p, err := l.AddPod(ctx, n, lab.PodOptions{Name: "host-" + n.Name, HostNetwork: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := p.ServeHTTP(ctx, 8443); err != nil {
				t.Fatal(err)
			}
			gws = append(gws, gw{n, p})
		}
	}
	for _, from := range gws {
		for _, to := range gws {
			if from.node.Cluster == to.node.Cluster {
				continue
			}
			body, err := from.pod.HTTPGet(ctx, "http://"+net.JoinHostPort(to.node.PublicIP.String(), "8443")+"/")
			if err != nil {
				t.Errorf("%s → %s: %v", from.node.Name, to.node.Name, err)
				continue
			}
			if !strings.Contains(body, " "+from.node.PublicIP.String()+":") {
				t.Errorf("%s → %s: answer %q does not show source %s", from.node.Name, to.node.Name, strings.TrimSpace(body), from.node.PublicIP)
			}
		}
	}

	for _, c := range l.Clusters() {
		server, err := l.AddPod(ctx, c.Workers()[0], lab.PodOptions{Name: "web", Labels: map[string]string{"app": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := server.ServeHTTP(ctx, 8080); err != nil {
			t.Fatal(err)
		}
		svc, err := c.CreateService(ctx, lab.ServiceOptions{Name: "web", Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
		if err != nil {
			t.Fatal(err)
		}
		client, err := l.AddPod(ctx, c.Gateways()[0], lab.PodOptions{Name: "client"})
		if err != nil {
			t.Fatal(err)
		}
		err = lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			_, err := client.HTTPGet(ctx, "http://"+svc.Spec.ClusterIP+"/")
			return err
		})
		if err != nil {
			t.Errorf("cluster %s service: %v", c.Name, err)
		}
	}
}

// TestWorkloadTools runs the tools tests use in pods: iperf3 across nodes and ping.
func TestWorkloadTools(t *testing.T) {
	ctx := t.Context()
	l := labtest.Start(t, lab.Options{Clusters: []lab.ClusterOptions{{Name: "tools"}}})
	c := l.Cluster("tools")
	server, err := l.AddPod(ctx, c.Gateways()[0], lab.PodOptions{Name: "iperf-server"})
	if err != nil {
		t.Fatal(err)
	}
	client, err := l.AddPod(ctx, c.Workers()[0], lab.PodOptions{Name: "iperf-client"})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := client.Exec(ctx, "ping", "-c1", "-W2", server.IP.String()); err != nil {
		t.Fatalf("ping: %v\n%s", err, out)
	}
	// A pod's resolver, for dig and friends without @server.
	if err := client.SetResolver(ctx, server.IP, "clusterset.local"); err != nil {
		t.Fatal(err)
	}
	if out, err := client.Exec(ctx, "cat", "/etc/resolv.conf"); err != nil || !strings.Contains(out, "nameserver "+server.IP.String()) {
		t.Errorf("resolv.conf in pod: %q, %v", out, err)
	}
	if err := server.StartIperf3(ctx, 5201); err != nil {
		t.Fatal(err)
	}
	out, err := client.Exec(ctx, "iperf3", "-c", server.IP.String(), "-t", "1", "-J")
	if err != nil {
		t.Fatal(err)
	}
	bps, err := iperfReceived(out)
	if err != nil {
		t.Fatal(err)
	}
	if bps <= 0 {
		t.Fatalf("iperf3 measured nothing:\n%s", out)
	}
	t.Logf("pod to pod across nodes: %.1f Gbit/s", bps/1e9)
}

// TestFleetComponentsRun installs the example fleet the way `make lab` does and waits
// until every component the rendered tree asks for runs and is ready.
func TestFleetComponentsRun(t *testing.T) {
	startExampleFleet(t)
}

// startExampleFleet brings up a lab for examples/fleet.yaml (two nodes a cluster, the
// last cluster behind NAT), installs the rendered fleet the way `make lab` does and waits
// until every component runs and is ready. It returns the lab, the fleet and the
// rendered tree's directory.
func startExampleFleet(t *testing.T) (*lab.Lab, *mcnetv1.ClusterSet, string) {
	t.Helper()
	ctx := t.Context()
	root, err := lab.RepoRoot("")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := fleet.Load(filepath.Join(root, "examples", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	opts, err := fleetlab.LabOptions(cs, 2, cs.Spec.Clusters[len(cs.Spec.Clusters)-1].Name)
	if err != nil {
		t.Fatal(err)
	}
	l := labtest.Start(t, opts)
	repoDir := filepath.Join(t.TempDir(), "fleet-repo")
	if err := fleetlab.Install(ctx, l, cs, repoDir); err != nil {
		t.Fatal(err)
	}
	if err := fleetlab.Wait(ctx, l, 2*time.Minute); err != nil {
		t.Fatal(fmt.Errorf("components: %w", err))
	}
	return l, cs, repoDir
}
