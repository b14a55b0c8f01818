package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
)

// TestLabSmoke brings up two clusters of two nodes, checks pod-to-pod routing across
// nodes and a ClusterIP Service through kube-proxy, tears down and checks that nothing
// is left. It runs in `make test`, so it stays short.
func TestLabSmoke(t *testing.T) {
	labtest.RequireRoot(t)
	ctx := t.Context()
	l := labtest.Start(t, lab.Options{Clusters: []lab.ClusterOptions{
		{Name: "east"}, {Name: "west", BehindNAT: true},
	}})

	for _, c := range l.Clusters() {
		t.Run(c.Name, func(t *testing.T) {
			gw, worker := c.Gateways()[0], c.Workers()[0]
			server, err := l.AddPod(ctx, gw, lab.PodOptions{Name: "web", Labels: map[string]string{"app": "web"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := server.ServeHTTP(ctx, 8080); err != nil {
				t.Fatal(err)
			}
			client, err := l.AddPod(ctx, worker, lab.PodOptions{Name: "client"})
			if err != nil {
				t.Fatal(err)
			}

			// Pod to pod across nodes: plain routing over the node LAN.
			body, err := client.HTTPGet(ctx, fmt.Sprintf("http://%s/", net.JoinHostPort(server.IP.String(), "8080")))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%s %s:", server, client.IP); !strings.HasPrefix(body, want) {
				t.Errorf("pod to pod: got %q, want prefix %q", body, want)
			}

			// A ClusterIP Service: EndpointSlices from kube-controller-manager, DNAT from
			// the client node's kube-proxy.
			svc, err := c.CreateService(ctx, lab.ServiceOptions{Name: "web", Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
			if err != nil {
				t.Fatal(err)
			}
			url := fmt.Sprintf("http://%s/", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
			err = lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				body, err = client.HTTPGet(ctx, url)
				return err
			})
			if err != nil {
				t.Fatalf("service %s: %v", url, err)
			}
			if !strings.HasPrefix(body, server.String()+" ") {
				t.Errorf("service: got %q, want an answer from %s", body, server)
			}
		})
	}

	// The gateways of both clusters reach each other over the WAN; west's gateway is
	// behind NAT, so east sees west's public address, not its interface address.
	eastGW, westGW := l.Cluster("east").Gateways()[0], l.Cluster("west").Gateways()[0]
	if westGW.WANIP == westGW.PublicIP {
		t.Fatalf("west gateway behind NAT has public IP equal to its WAN IP %s", westGW.WANIP)
	}
	eastHost, err := l.AddPod(ctx, eastGW, lab.PodOptions{Name: "gw-host", HostNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := eastHost.ServeHTTP(ctx, 8081); err != nil {
		t.Fatal(err)
	}
	westHost, err := l.AddPod(ctx, westGW, lab.PodOptions{Name: "gw-host", HostNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	body, err := westHost.HTTPGet(ctx, fmt.Sprintf("http://%s/", net.JoinHostPort(eastGW.PublicIP.String(), "8081")))
	if err != nil {
		t.Fatal(err)
	}
	if want := " " + westGW.PublicIP.String() + ":"; !strings.Contains(body, want) {
		t.Errorf("WAN through NAT: got %q, want source %s", body, westGW.PublicIP)
	}

	// Every cluster's pods reach the other clusters' API servers on the WAN (the way
	// controllers reach a broker), leaving through their control plane's uplink.
	eastClient := l.Cluster("east").Pods()[1]
	conn, err := eastClient.Dial(ctx, "tcp", l.Cluster("west").PublicAPIServer.String())
	if err != nil {
		t.Fatalf("east pod to west's public API server: %v", err)
	}
	conn.Close()

	// What a failed test would print covers logs and objects.
	dump := l.Dump(ctx)
	for _, want := range []string{"kube-apiserver.log", "node east-gw1 ready=True", "pod default/web node=east-gw1", "endpointslice default/web-"} {
		if !strings.Contains(dump, want) {
			t.Errorf("failure dump lacks %q", want)
		}
	}

	// Tear down here rather than in cleanup, to check nothing is left.
	procs := l.Processes()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, l, procs)
}

// assertNothingLeft checks that no namespace, directory or process of the run remains.
func assertNothingLeft(t *testing.T, l *lab.Lab, procs []lab.Process) {
	t.Helper()
	for _, p := range procs {
		// A zombie would still have a stat file; the lab reaps what it starts.
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", p.PID)); err == nil {
			t.Errorf("process %s (pid %d) left behind", p.Name, p.PID)
		}
	}
	ents, err := os.ReadDir("/run/netns")
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), lab.Prefix+l.RunID+"-") {
			t.Errorf("namespace %s left behind", e.Name())
		}
	}
	if _, err := os.Stat(l.Dir); !os.IsNotExist(err) {
		t.Errorf("lab dir %s left behind (%v)", l.Dir, err)
	}
	assertNodesGone(t, l.RunID)
}
