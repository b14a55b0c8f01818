//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/fleetlab"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/e2e/lab/labtest"
	"github.com/mcnet-io/mcnet/kustomize"
)

// The networks every cluster of the overlap lab is built with: kubeadm's and kind's
// defaults, so no two clusters can tell their addresses apart without globalnet.
const (
	overlapPodCIDR     = "10.244.0.0/16"
	overlapServiceCIDR = "10.96.0.0/12"
	overlapPool        = "100.64.0.0/10"
)

// overlapFleet is three clusters with identical pod and service CIDRs and globalnet on:
// two talking VXLAN, one WireGuard.
func overlapFleet() *mcnetv1.ClusterSet {
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard)
	cs.Spec.Globalnet = &mcnetv1.GlobalnetSpec{CIDR: overlapPool}
	for i := range cs.Spec.Clusters {
		cs.Spec.Clusters[i].PodCIDRs = []string{overlapPodCIDR}
		cs.Spec.Clusters[i].ServiceCIDRs = []string{overlapServiceCIDR}
	}
	return cs
}

// globalRanges is a remapped cluster's pair of global ranges, as the Fleet table in
// Git records them.
type globalRanges struct{ pod, svc netip.Prefix }

// keptRanges reads every remapped cluster's global ranges from the Fleet table of the
// tree rendered into dir.
func keptRanges(t testing.TB, dir, fleet string) map[string]globalRanges {
	t.Helper()
	f, err := kustomize.ReadKept(dir, fleet)
	if err != nil || f == nil {
		t.Fatalf("the rendered Fleet table in %s: %v (%v)", dir, err, f)
	}
	out := map[string]globalRanges{}
	for _, m := range f.Spec.Clusters {
		if !m.Remapped {
			continue
		}
		if len(m.GlobalPodCIDRs) != 1 || len(m.GlobalServiceCIDRs) != 1 {
			t.Fatalf("Fleet table: remapped %s has global ranges %v %v, want one of each", m.Name, m.GlobalPodCIDRs, m.GlobalServiceCIDRs)
		}
		out[m.Name] = globalRanges{netip.MustParsePrefix(m.GlobalPodCIDRs[0]), netip.MustParsePrefix(m.GlobalServiceCIDRs[0])}
	}
	return out
}

// getFrom fetches url from pod with a short timeout per attempt and checks the answer
// came from want and saw src as the client's address.
func getFrom(ctx context.Context, from, want *lab.Pod, url string, src netip.Addr) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body, err := from.HTTPGet(ctx, url)
	if err != nil {
		return err
	}
	if prefix := fmt.Sprintf("%s %s:", want, src); !strings.HasPrefix(body, prefix) {
		return fmt.Errorf("from %s: got %q, want %q... (the sender's global address)", from, strings.TrimSpace(body), prefix)
	}
	return nil
}

// TestOverlap connects three clusters built with the same pod and service CIDRs
// (10.244.0.0/16, 10.96.0.0/12) through globalnet, kube-proxy in iptables mode in two
// and nftables mode in the third:
//   - every pod is reached at its global address (its offset in its cluster's global pod
//     range, from the Fleet table in Git), and the destination sees the sender's own
//     global address, one per pod, the same on every connection;
//   - a NetworkPolicy in the destination cluster whose one ipBlock is a remote pod's
//     global /32, enforced by a real engine on every node (kube-router's firewall),
//     admits that pod and denies its neighbour on the same node and a third cluster's;
//   - exported services answer under clusterset.local at global addresses (per-cluster
//     names, ClusterSetIP, headless per pod) and connect;
//   - removing a cluster through Git keeps the others' global ranges and removes its
//     ranges from every remaining node.
func TestOverlap(t *testing.T) {
	labtest.RequireRoot(t)
	ctx := t.Context()
	cs := overlapFleet()
	opts, err := fleetlab.LabOptions(cs, 2)
	if err != nil {
		t.Fatal(err)
	}
	opts.Clusters[1].ProxyMode = "nftables"
	opts.NetworkPolicy = true
	for i := range opts.Clusters {
		if opts.Clusters[i].ProxyMode == "" {
			opts.Clusters[i].ProxyMode = "iptables"
		}
	}
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
	c1, c2, c3 := l.Clusters()[0], l.Clusters()[1], l.Clusters()[2]
	for _, c := range l.Clusters() {
		t.Logf("%s: kube-proxy %s", c.Name, c.ProxyMode)
	}

	ranges := keptRanges(t, dir, cs.Name)
	var seen []netip.Prefix
	for _, c := range l.Clusters() {
		r, ok := ranges[c.Name]
		if !ok {
			t.Fatalf("%s is not remapped in the Fleet table: %v", c.Name, ranges)
		}
		for _, p := range []netip.Prefix{r.pod, r.svc} {
			if slices.ContainsFunc(seen, p.Overlaps) || !netip.MustParsePrefix(overlapPool).Contains(p.Addr()) {
				t.Fatalf("global range %s of %s overlaps another or lies outside %s: %v", p, c.Name, overlapPool, ranges)
			}
			seen = append(seen, p)
		}
		t.Logf("%s: pods %s at %s, services %s at %s", c.Name, c.PodCIDR, r.pod, c.ServiceCIDR, r.svc)
	}
	podCIDR, svcCIDR := netip.MustParsePrefix(overlapPodCIDR), netip.MustParsePrefix(overlapServiceCIDR)
	globalPod := func(p *lab.Pod) netip.Addr {
		return mcnetv1.MapPrefix(p.IP, podCIDR, ranges[p.Node.Cluster.Name].pod)
	}
	globalSvc := func(c *lab.Cluster, ip string) string {
		return mcnetv1.MapPrefix(netip.MustParseAddr(ip), svcCIDR, ranges[c.Name].svc).String()
	}

	servers, clients := serveOnWorkers(t, l)
	// A neighbour of c1's client, for the policy: same node, another pod.
	other, err := l.AddPod(ctx, c1.Workers()[0], lab.PodOptions{Name: "client2"})
	if err != nil {
		t.Fatal(err)
	}
	if servers[c1.Name].IP == servers[c2.Name].IP {
		t.Logf("c1's and c2's servers have the same pod address %s; only their global addresses tell them apart", servers[c1.Name].IP)
	}
	urlOf := func(srv *lab.Pod) string {
		return "http://" + net.JoinHostPort(globalPod(srv).String(), "8080") + "/"
	}

	t.Run("pod to pod by global address, the sender's global address seen", func(t *testing.T) {
		for _, src := range l.Clusters() {
			for _, dst := range l.Clusters() {
				if src == dst {
					continue
				}
				srv, cli := servers[dst.Name], clients[src.Name]
				if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
					return getFrom(ctx, cli, srv, urlOf(srv), globalPod(cli))
				}); err != nil {
					t.Errorf("%s -> %s: %v", src.Name, dst.Name, err)
				}
			}
		}
		// Two pods of one node leave with two addresses, each the same every time.
		srv := servers[c2.Name]
		for i := range 3 {
			for _, cli := range []*lab.Pod{clients[c1.Name], other} {
				if err := lab.Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
					return getFrom(ctx, cli, srv, urlOf(srv), globalPod(cli))
				}); err != nil {
					t.Errorf("round %d, %s -> %s: %v", i, cli, srv, err)
				}
			}
		}
		if a, b := globalPod(clients[c1.Name]), globalPod(other); a == b {
			t.Errorf("two pods share the global address %s", a)
		}
	})

	t.Run("a NetworkPolicy ipBlock on one remote pod's global /32 admits it and denies its neighbour", func(t *testing.T) {
		checkOverlapPolicy(t, servers[c2.Name], clients[c1.Name], other, clients[c3.Name], globalPod, urlOf)
	})

	const ns, domain = "default", "clusterset.local"
	web := "web." + ns + ".svc." + domain
	ips := map[string]string{} // cluster → the web Service's real ClusterIP
	for _, c := range []*lab.Cluster{c1, c2} {
		svc, err := c.CreateService(ctx, lab.ServiceOptions{Name: "web", Namespace: ns, Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
		if err != nil {
			t.Fatal(err)
		}
		ips[c.Name] = svc.Spec.ClusterIP
		if err := mcsClient(t, c).Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("exported services answer global addresses and connect", func(t *testing.T) {
		// Each exporter's own name, asked from each other cluster (c1 iptables and c2
		// nftables both ways, and from the third).
		for _, q := range []struct{ from, to *lab.Cluster }{{c1, c2}, {c2, c1}, {c3, c1}, {c3, c2}} {
			d := digger{pod: clients[q.from.Name], server: startClusterDNS(t, l, q.from)}
			want := globalSvc(q.to, ips[q.to.Name])
			if err := lab.Eventually(ctx, time.Minute, d.expect(q.to.Name+"."+web, "A", want)); err != nil {
				t.Errorf("from %s: %v", q.from.Name, err)
				continue
			}
			url := "http://" + net.JoinHostPort(want, "80") + "/"
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				body, err := clients[q.from.Name].HTTPGet(ctx, url)
				if err == nil && !strings.HasPrefix(body, servers[q.to.Name].String()+" ") {
					err = fmt.Errorf("answered by %q, want %s", body, servers[q.to.Name])
				}
				return err
			}); err != nil {
				t.Errorf("%s -> %s's service at its global ClusterIP %s (real %s): %v", q.from.Name, q.to.Name, want, ips[q.to.Name], err)
			}
		}

		// The bare name is c3's ClusterSetIP, in c3's own service CIDR (which c1 and c2
		// use too); its endpoints are the exporters' global ClusterIPs, and TCP to it
		// reaches both clusters' servers.
		d := digger{pod: clients[c3.Name], server: startClusterDNS(t, l, c3)}
		vip := clusterSetIP(ctx, t, c3, ns, "web")
		if err := lab.Eventually(ctx, 10*time.Second, d.expect(web, "A", vip)); err != nil {
			t.Fatal(err)
		}
		wantEps := []string{globalSvc(c1, ips[c1.Name]), globalSvc(c2, ips[c2.Name])}
		slices.Sort(wantEps)
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			eps, err := vipEndpoints(ctx, mcsClient(t, c3), ns, "web")
			if err == nil && !slices.Equal(eps, wantEps) {
				err = fmt.Errorf("ClusterSetIP %s leads to %v, want the global ClusterIPs %v", vip, eps, wantEps)
			}
			return err
		}); err != nil {
			t.Error(err)
		}
		reached := map[string]bool{}
		url := "http://" + net.JoinHostPort(vip, "80") + "/"
		if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			body, err := clients[c3.Name].HTTPGet(actx, url)
			for _, c := range []*lab.Cluster{c1, c2} {
				if err == nil && strings.HasPrefix(body, servers[c.Name].String()+" ") {
					reached[c.Name] = true
				}
			}
			if !reached[c1.Name] || !reached[c2.Name] {
				return fmt.Errorf("through the ClusterSetIP %s reached %v (last: %q, %v)", vip, reached, body, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})

	t.Run("a headless service answers each pod's global address", func(t *testing.T) {
		// Selector-less, with the slice a StatefulSet's pod would give it, in c1 and c2:
		// the same pod address in both clusters, two global ones.
		exportHeadlessDB(t, ns, servers, c1, c2)
		d := digger{pod: clients[c3.Name], server: startClusterDNS(t, l, c3)}
		db := "db." + ns + ".svc." + domain
		all := []string{globalPod(servers[c1.Name]).String(), globalPod(servers[c2.Name]).String()}
		slices.Sort(all)
		if err := lab.Eventually(ctx, time.Minute, d.expect(db, "A", all...)); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*lab.Cluster{c1, c2} {
			name := "db-0." + c.Name + "." + db
			srv := servers[c.Name]
			if err := lab.Eventually(ctx, 10*time.Second, d.expect(name, "A", globalPod(srv).String())); err != nil {
				t.Error(err)
				continue
			}
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				return getFrom(ctx, clients[c3.Name], srv, urlOf(srv), globalPod(clients[c3.Name]))
			}); err != nil {
				t.Errorf("TCP to %s: %v", name, err)
			}
		}
	})

	t.Run("removing a cluster through Git keeps the others' ranges and takes its own away", func(t *testing.T) {
		checkOverlapRemoval(t, cl, ranges, servers, clients, globalPod, urlOf)
	})
}

// checkOverlapPolicy creates, in srv's cluster, a NetworkPolicy selecting srv (app=web)
// whose only ingress rule is an ipBlock of allowed's global /32 on the HTTP port, and
// checks that the lab's NetworkPolicy engine admits allowed and denies denied (a pod
// of allowed's node, whose global address differs in the last bits) and third (a
// pod of another cluster). Deleting the policy lets them in again, so the denial was
// the policy's.
func checkOverlapPolicy(t *testing.T, srv, allowed, denied, third *lab.Pod, globalPod func(*lab.Pod) netip.Addr, urlOf func(*lab.Pod) string) {
	t.Helper()
	ctx := t.Context()
	c := srv.Node.Cluster
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web-from-one-remote-pod", Namespace: srv.Namespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(globalPod(allowed), 32).String()}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: new(corev1.ProtocolTCP), Port: new(intstr.FromInt32(8080))}},
			}},
		},
	}
	policies := c.Client.NetworkingV1().NetworkPolicies(np.Namespace)
	if _, err := policies.Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = policies.Delete(context.WithoutCancel(ctx), np.Name, metav1.DeleteOptions{})
		}
	})
	t.Logf("NetworkPolicy %s/%s in %s: ingress to app=web on 8080 only from %s (%s)", np.Namespace, np.Name, c.Name, np.Spec.Ingress[0].From[0].IPBlock.CIDR, allowed)

	// The engine writes its rules when it sees the policy: until then the neighbour
	// still gets in.
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		if err := getFrom(ctx, denied, srv, urlOf(srv), globalPod(denied)); err == nil {
			return fmt.Errorf("%s (global %s) still reaches %s", denied, globalPod(denied), srv)
		}
		return nil
	}); err != nil {
		t.Fatalf("the policy is not enforced: %v", err)
	}
	if err := lab.Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
		return getFrom(ctx, allowed, srv, urlOf(srv), globalPod(allowed))
	}); err != nil {
		t.Errorf("the admitted pod %s: %v", allowed, err)
	}
	for _, cli := range []*lab.Pod{denied, third} {
		for range 3 {
			if err := getFrom(ctx, cli, srv, urlOf(srv), globalPod(cli)); err == nil {
				t.Errorf("%s (global %s) reached %s through a policy admitting only %s", cli, globalPod(cli), srv, globalPod(allowed))
			}
		}
	}
	for range 3 {
		if err := getFrom(ctx, allowed, srv, urlOf(srv), globalPod(allowed)); err != nil {
			t.Errorf("the admitted pod %s, again: %v", allowed, err)
		}
	}

	if err := policies.Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted = true
	for _, cli := range []*lab.Pod{denied, third} {
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			return getFrom(ctx, cli, srv, urlOf(srv), globalPod(cli))
		}); err != nil {
			t.Errorf("%s after the policy was deleted: %v", cli, err)
		}
	}
}

// checkOverlapRemoval renders the fleet without its last cluster, keeping the Fleet
// table of the first render, applies it with prune, and checks that the remaining
// clusters keep their global ranges and addresses while the removed cluster's global
// ranges leave every remaining node.
func checkOverlapRemoval(t *testing.T, l *connectedLab, ranges map[string]globalRanges, servers, clients map[string]*lab.Pod,
	globalPod func(*lab.Pod) netip.Addr, urlOf func(*lab.Pod) string) {
	t.Helper()
	ctx := t.Context()
	cs := l.fleet
	stay, gone := l.Clusters()[:2], l.Clusters()[2]
	broker := l.Cluster(cs.Spec.Broker.Cluster)

	smaller := cs.DeepCopy()
	smaller.Spec.Clusters = smaller.Spec.Clusters[:2]
	kept, err := kustomize.ReadKept(l.dir, cs.Name)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "fleet-repo-2")
	if err := fleetlab.Render(l.Lab, smaller, dir, kept); err != nil {
		t.Fatal(err)
	}
	after := keptRanges(t, dir, cs.Name)
	for _, c := range stay {
		if after[c.Name] != ranges[c.Name] {
			t.Errorf("%s's global ranges moved from %v to %v when %s left", c.Name, ranges[c.Name], after[c.Name], gone.Name)
		}
	}
	if _, ok := after[gone.Name]; ok {
		t.Errorf("the removed %s is still in the Fleet table: %v", gone.Name, after)
	}
	goneRanges := []string{ranges[gone.Name].pod.String(), ranges[gone.Name].svc.String()}
	for _, c := range stay {
		for _, n := range c.Gateways() {
			s, err := nodeState(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(s, goneRanges[0]) {
				t.Fatalf("%s never had %s's global pod range %s, so its absence would prove nothing:\n%s", n.Name, gone.Name, goneRanges[0], s)
			}
		}
	}
	if err := applyPruned(ctx, broker, filepath.Join(l.dir, kustomize.DirBroker), filepath.Join(dir, kustomize.DirBroker)); err != nil {
		t.Fatal(err)
	}
	for _, c := range stay {
		if err := applyPruned(ctx, c, filepath.Join(l.dir, kustomize.DirClusters, c.Name), filepath.Join(dir, kustomize.DirClusters, c.Name)); err != nil {
			t.Fatal(err)
		}
	}

	if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var errs []error
		for _, c := range stay {
			gw, err := activeGateway(ctx, c)
			if err != nil {
				return err
			}
			for _, conn := range gw.Status.Connections {
				if conn.Cluster == gone.Name {
					errs = append(errs, fmt.Errorf("%s still reports a connection to %s", gw.Name, gone.Name))
				}
			}
			for _, n := range c.Nodes {
				s, err := nodeState(ctx, n)
				if err != nil {
					return err
				}
				for _, p := range append(slices.Clone(goneRanges), "mcnet-wg") {
					if strings.Contains(s, p) {
						errs = append(errs, fmt.Errorf("%s still has %s:\n%s", n.Name, p, s))
					}
				}
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		t.Fatal(err)
	}
	remaining := &connectedLab{Lab: l.Lab, fleet: smaller, dir: dir, only: stay}
	if err := remaining.waitConnected(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, src := range stay {
		for _, dst := range stay {
			if src == dst {
				continue
			}
			srv, cli := servers[dst.Name], clients[src.Name]
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				return getFrom(ctx, cli, srv, urlOf(srv), globalPod(cli))
			}); err != nil {
				t.Errorf("%s -> %s at the same global addresses after removing %s: %v", src.Name, dst.Name, gone.Name, err)
			}
		}
	}
}
