package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/internal/clusterhealth"
	"github.com/mcnet-io/mcnet/kustomize"
)

// connectFleet is a fleet of clusters named after their cable driver preference, the
// broker on the first. Two VXLAN clusters talk VXLAN; any pair with a WireGuard
// cluster talks WireGuard.
func connectFleet(drivers ...mcnetv1.CableDriver) *mcnetv1.ClusterSet {
	cs := &mcnetv1.ClusterSet{
		TypeMeta:   metav1.TypeMeta{APIVersion: mcnetv1.GroupVersion.String(), Kind: "ClusterSet"},
		ObjectMeta: metav1.ObjectMeta{Name: "lab"},
	}
	for i, d := range drivers {
		name := fmt.Sprintf("c%d-%s", i+1, map[mcnetv1.CableDriver]string{mcnetv1.CableVXLAN: "vx", mcnetv1.CableWireGuard: "wg"}[d])
		pod := fmt.Sprintf("10.%d.0.0/16", 10*i+10)
		svc := fmt.Sprintf("10.%d.0.0/16", 10*i+11)
		cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{Name: name, PodCIDRs: []string{pod}, ServiceCIDRs: []string{svc}, Cable: d})
	}
	cs.Spec.Broker = mcnetv1.BrokerSpec{Cluster: cs.Spec.Clusters[0].Name, Server: "https://broker.invalid:6443"}
	return cs
}

// connectedLab is a lab with a fleet installed and every connection up.
type connectedLab struct {
	*lab.Lab
	fleet *mcnetv1.ClusterSet
	dir   string
	// only, when set, are the clusters of the fleet; by default all of the lab's.
	only []*lab.Cluster
}

// members are the lab clusters the fleet has installed.
func (l *connectedLab) members() []*lab.Cluster {
	if l.only != nil {
		return l.only
	}
	return l.Clusters()
}

// startConnected brings up the lab for cs with nodes per cluster, installs the fleet
// and waits until every gateway reports every connection connected.
func startConnected(t testing.TB, cs *mcnetv1.ClusterSet, nodes int, behindNAT ...string) *connectedLab {
	t.Helper()
	opts, err := fleetlab.LabOptions(cs, nodes, behindNAT...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range opts.Clusters {
		if nodes >= 3 {
			opts.Clusters[i].Gateways = nodes - 1 // standbys, and one worker
		}
	}
	return startConnectedWith(t, cs, opts)
}

// startConnectedWith is startConnected for lab options of the caller's.
func startConnectedWith(t testing.TB, cs *mcnetv1.ClusterSet, opts lab.Options) *connectedLab {
	t.Helper()
	ctx := t.Context()
	l := labtest.Start(t, opts)
	dir := filepath.Join(t.TempDir(), "fleet-repo")
	if err := fleetlab.Install(ctx, l, cs, dir); err != nil {
		t.Fatal(err)
	}
	if err := fleetlab.Wait(ctx, l, 2*time.Minute); err != nil {
		t.Fatal(fmt.Errorf("components: %w", err))
	}
	cl := &connectedLab{Lab: l, fleet: cs, dir: dir}
	if err := cl.waitConnected(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	return cl
}

// gateways returns a cluster's Gateway objects.
func gateways(ctx context.Context, c *lab.Cluster) ([]mcnetv1.Gateway, error) {
	cl, err := client.New(c.Config, client.Options{Scheme: agent.Scheme()})
	if err != nil {
		return nil, err
	}
	var list mcnetv1.GatewayList
	if err := cl.List(ctx, &list, client.InNamespace(mcnetv1.SystemNamespace)); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// activeGateway returns the Gateway object that carries the cluster's traffic, read as
// DNS, show and diagnose read it (clusterhealth.Active: active and not past its
// status.expireTime), once exactly one does and it publishes its endpoint. A killed
// gateway's object still says active until it expires, GatewayExpiry after its last
// heartbeat; until then the cluster has two and the wait goes on.
func activeGateway(ctx context.Context, c *lab.Cluster) (*mcnetv1.Gateway, error) {
	gws, err := gateways(ctx, c)
	if err != nil {
		return nil, err
	}
	active := clusterhealth.Active(gws, time.Now())
	switch {
	case len(active) == 0:
		return nil, fmt.Errorf("cluster %s: no active gateway", c.Name)
	case len(active) > 1:
		names := make([]string, len(active))
		for i, gw := range active {
			names[i] = gw.Name
		}
		return nil, fmt.Errorf("cluster %s: %d gateways report active: %s", c.Name, len(active), strings.Join(names, ", "))
	case active[0].Status.LocalEndpoint == nil:
		return nil, fmt.Errorf("cluster %s: active gateway %s publishes no endpoint yet", c.Name, active[0].Name)
	}
	return active[0], nil
}

// waitActiveGateway is activeGateway for a caller that needs the answer once: it
// asks until the cluster has exactly one live active gateway (a heartbeat renewed late
// on a loaded machine expires the status for a moment) and fails t after 30 s.
func waitActiveGateway(t testing.TB, c *lab.Cluster) *mcnetv1.Gateway {
	t.Helper()
	var gw *mcnetv1.Gateway
	if err := lab.Eventually(t.Context(), 30*time.Second, func(ctx context.Context) error {
		var err error
		gw, err = activeGateway(ctx, c)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return gw
}

// waitConnected waits until each cluster's active gateway reports a connected
// connection to every other cluster of the lab, through that cluster's active gateway.
func (l *connectedLab) waitConnected(ctx context.Context, timeout time.Duration) error {
	return lab.Eventually(ctx, timeout, l.connected)
}

// connected is waitConnected's condition.
func (l *connectedLab) connected(ctx context.Context) error {
	var errs []error
	active := map[string]*mcnetv1.Gateway{}
	for _, c := range l.members() {
		gw, err := activeGateway(ctx, c)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		active[c.Name] = gw
	}
	for _, c := range l.members() {
		gw := active[c.Name]
		if gw == nil {
			continue
		}
		byCluster := map[string]mcnetv1.Connection{}
		for _, conn := range gw.Status.Connections {
			byCluster[conn.Cluster] = conn
		}
		for _, o := range l.members() {
			if o == c {
				continue
			}
			conn, ok := byCluster[o.Name]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: no connection to %s", gw.Name, o.Name))
			case conn.Status != mcnetv1.Connected:
				errs = append(errs, fmt.Errorf("%s: connection to %s is %s: %s", gw.Name, o.Name, conn.Status, conn.Message))
			case active[o.Name] != nil && (conn.Endpoint == nil || conn.Endpoint.Hostname != active[o.Name].Name):
				errs = append(errs, fmt.Errorf("%s: connection to %s does not go to its active gateway %s yet", gw.Name, o.Name, active[o.Name].Name))
			}
		}
	}
	return errors.Join(errs...)
}

// renderFor renders cs into dir the way fleetlab.Install does (API server URLs of
// the lab, the global ranges of a tree already in dir kept), without applying it.
func renderFor(l *lab.Lab, cs *mcnetv1.ClusterSet, dir string) error {
	kept, err := kustomize.ReadKept(dir, cs.Name)
	if err != nil {
		return err
	}
	return fleetlab.Render(l, cs, dir, kept)
}

// installMembers renders cs into dir and applies it to its clusters in the lab as
// fleetlab.Install does (CRDs, broker, each cluster, its broker credentials), for a
// fleet of only some of the lab's clusters.
func installMembers(ctx context.Context, l *lab.Lab, cs *mcnetv1.ClusterSet, dir string) error {
	if err := renderFor(l, cs, dir); err != nil {
		return err
	}
	broker := l.Cluster(cs.Spec.Broker.Cluster)
	for _, m := range cs.Spec.Clusters {
		if err := l.Cluster(m.Name).ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirCRDs)); err != nil {
			return err
		}
	}
	if err := broker.ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirBroker)); err != nil {
		return err
	}
	for _, m := range cs.Spec.Clusters {
		c := l.Cluster(m.Name)
		if err := c.ApplyKustomization(ctx, filepath.Join(dir, kustomize.DirClusters, c.Name)); err != nil {
			return err
		}
		if err := fleetlab.DeliverBrokerCredentials(ctx, broker, c, mcnetv1.DefaultBrokerNamespace); err != nil {
			return err
		}
	}
	return nil
}

// serveOnWorkers starts an HTTP server in a pod on each cluster's first worker and
// returns the pods by cluster; clients gets a client pod next to each.
func serveOnWorkers(t testing.TB, l *lab.Lab) (servers, clients map[string]*lab.Pod) {
	t.Helper()
	ctx := t.Context()
	servers, clients = map[string]*lab.Pod{}, map[string]*lab.Pod{}
	for _, c := range l.Clusters() {
		w := c.Workers()[0]
		srv, err := l.AddPod(ctx, w, lab.PodOptions{Name: "web", Labels: map[string]string{"app": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.ServeHTTP(ctx, 8080); err != nil {
			t.Fatal(err)
		}
		cli, err := l.AddPod(ctx, w, lab.PodOptions{Name: "client"})
		if err != nil {
			t.Fatal(err)
		}
		servers[c.Name], clients[c.Name] = srv, cli
	}
	return servers, clients
}

// get fetches url from pod with a short timeout per attempt and checks the answer
// came from want with the client's own pod IP as source.
func get(ctx context.Context, from, want *lab.Pod, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := from.HTTPGet(ctx, url)
	if err != nil {
		return err
	}
	if prefix := fmt.Sprintf("%s %s:", want, from.IP); !strings.HasPrefix(body, prefix) {
		return fmt.Errorf("from %s: got %q, want %q... (source IP preserved)", from, strings.TrimSpace(body), prefix)
	}
	return nil
}

// checkAllPairs checks TCP from each cluster's client to every other cluster's
// server, with the source pod IP preserved.
func checkAllPairs(t *testing.T, l *lab.Lab, servers, clients map[string]*lab.Pod, timeout time.Duration) {
	t.Helper()
	for _, src := range l.Clusters() {
		for _, dst := range l.Clusters() {
			if src == dst {
				continue
			}
			srv, cli := servers[dst.Name], clients[src.Name]
			url := "http://" + net.JoinHostPort(srv.IP.String(), "8080") + "/"
			err := lab.Eventually(t.Context(), timeout, func(ctx context.Context) error { return get(ctx, cli, srv, url) })
			if err != nil {
				t.Errorf("%s -> %s: %v", src.Name, dst.Name, err)
			}
		}
	}
}

// TestConnect is the short end-to-end test in `make test`: three clusters, two
// preferring VXLAN (so they talk VXLAN) and one WireGuard (so the others talk to it
// through WireGuard); every gateway reports every connection connected, and TCP from
// a worker's pod reaches a worker's pod in every other cluster with its source IP.
func TestConnect(t *testing.T) {
	labtest.RequireRoot(t)
	l := startConnected(t, connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard), 2)
	servers, clients := serveOnWorkers(t, l.Lab)
	checkAllPairs(t, l.Lab, servers, clients, 30*time.Second)

	// The cables are the drivers the pairs agree on, reported the same from both ends.
	checkCablesAgree(t, l)
	gw, err := activeGateway(t.Context(), l.Clusters()[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, conn := range gw.Status.Connections {
		if conn.RTT == nil || conn.RTT.Last.Duration <= 0 {
			t.Errorf("%s: connection to %s has no RTT: %+v", gw.Name, conn.Cluster, conn)
		}
	}
}

// checkCablesAgree checks that every active gateway reports, for each connection, the
// driver the pair runs (mcnetv1.PairDriver of the two clusters' preferences), the same
// as the other end reports, on the port the remote listens on.
func checkCablesAgree(t *testing.T, l *connectedLab) {
	t.Helper()
	ctx := t.Context()
	prefer := map[string]mcnetv1.CableDriver{}
	for _, c := range l.fleet.Spec.Clusters {
		prefer[c.Name] = c.Cable
		if prefer[c.Name] == "" {
			prefer[c.Name] = l.fleet.Spec.Cable
		}
	}
	reported := map[[2]string]mcnetv1.Connection{}
	for _, c := range l.members() {
		gw, err := activeGateway(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		for _, conn := range gw.Status.Connections {
			reported[[2]string{c.Name, conn.Cluster}] = conn
		}
	}
	for pair, conn := range reported {
		want := mcnetv1.PairDriver(prefer[pair[0]], prefer[pair[1]])
		back, ok := reported[[2]string{pair[1], pair[0]}]
		switch {
		case conn.Cable != want:
			t.Errorf("%s -> %s: cable %q, want %q (preferences %s and %s)", pair[0], pair[1], conn.Cable, want, prefer[pair[0]], prefer[pair[1]])
		case !ok || back.Cable != conn.Cable:
			t.Errorf("%s -> %s runs %q but %s -> %s reports %q", pair[0], pair[1], conn.Cable, pair[1], pair[0], back.Cable)
		case conn.Port == 0:
			t.Errorf("%s -> %s: no port reported", pair[0], pair[1])
		}
	}
}
