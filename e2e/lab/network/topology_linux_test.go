package network

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBuildAndCables builds a two-cluster topology in real namespaces, one cluster
// behind NAT, and checks what the lab relies on: a gateway reaches the other cluster's
// gateway at its public address, and pulling a node's cables cuts exactly its links
// until they are plugged back in. It needs root, like the lab.
func TestBuildAndCables(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root (CI=true promises it)")
		}
		t.Skip("needs root: it creates network namespaces")
	}
	ctx := t.Context()
	// Not the lab's "mcl" prefix: a lab's CleanStale would take these for a dead lab's.
	p := fmt.Sprintf("mcnettest%d-", os.Getpid())
	cluster := func(i int, nat bool) Cluster {
		c := Cluster{Index: i, Netns: fmt.Sprintf("%sc%d", p, i), PodCIDR: netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", 10*i+10))}
		if nat {
			c.NATNetns = c.Netns + "nat"
		}
		slices, err := PodSlices(c.PodCIDR, 2)
		if err != nil {
			t.Fatal(err)
		}
		for j := range 2 {
			n := Node{Name: fmt.Sprintf("c%dn%d", i, j), Netns: fmt.Sprintf("%sc%dn%d", p, i, j), Index: j, IP: NodeIP(i, j), PodCIDR: slices[j], Gateway: j == 0}
			if n.Gateway {
				n.PublicIP, n.WANIP = PublicIP(i, j), PublicIP(i, j)
				if nat {
					n.WANIP = NATGatewayIP(i, j)
				}
			}
			c.Nodes = append(c.Nodes, n)
		}
		return c
	}
	topo := Topology{WAN: p + "wan", Clusters: []Cluster{cluster(0, true), cluster(1, false)}}
	t.Cleanup(func() {
		if err := RemoveNetns(context.WithoutCancel(ctx), topo.Netnses()); err != nil {
			t.Error(err)
		}
	})
	if err := AddNetns(ctx, topo.Netnses()...); err != nil {
		t.Fatal(err)
	}
	if err := Build(ctx, topo); err != nil {
		t.Fatal(err)
	}

	natGW, natWorker, gw := topo.Clusters[0].Nodes[0], topo.Clusters[0].Nodes[1], topo.Clusters[1].Nodes[0]
	if natGW.WANIP == natGW.PublicIP {
		t.Fatalf("gateway behind NAT has its public address %s on its interface", natGW.PublicIP)
	}
	ping := func(from Node, to netip.Addr) error {
		_, err := Output(ctx, "ip", "netns", "exec", from.Netns, "ping", "-c1", "-W1", to.String())
		return err
	}
	// reachable polls, because a bridge port that comes back up may take a moment
	// to forward.
	reachable := func(from Node, to netip.Addr) error {
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := ping(from, to)
			if err == nil || time.Now().After(deadline) {
				return err
			}
		}
	}
	paths := []struct {
		name     string
		from     Node
		to       netip.Addr
		throughC bool // crosses the NAT gateway's cables
		lanOnly  bool // crosses only its LAN cable
	}{
		{"gateway to gateway behind NAT, at its public address", gw, natGW.PublicIP, true, false},
		{"gateway behind NAT to gateway", natGW, gw.PublicIP, true, false},
		{"worker to its gateway over the LAN", natWorker, natGW.IP, true, true},
		{"worker to the other cluster's API server address", natWorker, UplinkIP(1), false, false},
	}
	for _, pt := range paths {
		if err := reachable(pt.from, pt.to); err != nil {
			t.Errorf("%s: %v", pt.name, err)
		}
	}

	// WAN cable only: the LAN still works.
	if err := SetCables(ctx, topo, topo.Clusters[0], natGW, false, false); err != nil {
		t.Fatal(err)
	}
	for _, pt := range paths {
		err := ping(pt.from, pt.to)
		if cut := pt.throughC && !pt.lanOnly; cut != (err != nil) {
			t.Errorf("WAN cable pulled: %s: reachable=%v, want %v", pt.name, err == nil, !cut)
		}
	}
	// Both cables.
	if err := SetCables(ctx, topo, topo.Clusters[0], natGW, false, true); err != nil {
		t.Fatal(err)
	}
	for _, pt := range paths {
		err := ping(pt.from, pt.to)
		if pt.throughC != (err != nil) {
			t.Errorf("all cables pulled: %s: reachable=%v, want %v", pt.name, err == nil, !pt.throughC)
		}
	}
	if err := SetCables(ctx, topo, topo.Clusters[0], natGW, true, true); err != nil {
		t.Fatal(err)
	}
	for _, pt := range paths {
		if err := reachable(pt.from, pt.to); err != nil {
			t.Errorf("cables back: %s: %v", pt.name, err)
		}
	}

	if err := RemoveNetns(ctx, topo.Netnses()); err != nil {
		t.Fatal(err)
	}
	out, err := Output(ctx, "ip", "netns", "list")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, p) {
		t.Errorf("namespaces left after RemoveNetns:\n%s", out)
	}
}
