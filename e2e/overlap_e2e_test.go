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

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/dataplane"
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

// overlapFleet is a mixed fleet under globalnet: three clusters with identical pod and
// service CIDRs (two talking VXLAN, one WireGuard) and a fourth, VXLAN, with networks
// of its own (connectFleet's 10.40.0.0/16 and 10.41.0.0/16) that overlap nobody's.
func overlapFleet() *mcnetv1.ClusterSet {
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard, mcnetv1.CableVXLAN)
	cs.Spec.Globalnet = &mcnetv1.GlobalnetSpec{CIDR: overlapPool}
	for i := range 3 {
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
		return fmt.Errorf("from %s: got %q, want %q... (the sender as the fleet maps it)", from, strings.TrimSpace(body), prefix)
	}
	return nil
}

// TestOverlap connects three clusters built with the same pod and service CIDRs
// (10.244.0.0/16, 10.96.0.0/12) through globalnet, and a fourth with networks of its
// own, kube-proxy in nftables mode in the second and iptables mode in the others:
//   - every pod of the three is reached at its global address (its offset in its
//     cluster's global pod range, from the Fleet table in Git), and the destination
//     sees the sender's own global address, one per pod, the same on every connection;
//   - the fourth cluster is not remapped: the Fleet table of every cluster and every
//     gateway's kernel say so alike; it reaches the three at their global addresses
//     and they reach it at its real ones, each destination seeing the sender's
//     address as the fleet decided (global from the three, real from the fourth);
//   - a NetworkPolicy in the destination cluster whose one ipBlock is a remote pod's
//     global /32, enforced by a real engine on every node (kube-router's firewall),
//     admits that pod and denies its neighbour on the same node, a third cluster's and
//     the fourth's;
//   - exported services answer under clusterset.local at the addresses the asking
//     cluster reaches (per-cluster names, ClusterSetIP, headless per pod): global ones
//     for the three, real ones for the fourth, and connect;
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
	cl := startConnectedWith(t, cs, opts)
	l, dir := cl.Lab, cl.dir
	c1, c2, c3, c4 := l.Clusters()[0], l.Clusters()[1], l.Clusters()[2], l.Clusters()[3]
	overlapping := []*lab.Cluster{c1, c2, c3}
	for _, c := range l.Clusters() {
		t.Logf("%s: kube-proxy %s", c.Name, c.ProxyMode)
	}

	ranges := keptRanges(t, dir, cs.Name)
	var seen []netip.Prefix
	for _, c := range overlapping {
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
	if r, ok := ranges[c4.Name]; ok {
		t.Fatalf("%s overlaps no other cluster, yet the Fleet table remaps it to %v", c4.Name, r)
	}
	t.Logf("%s: pods %s, services %s, not remapped", c4.Name, c4.PodCIDR, c4.ServiceCIDR)
	podCIDR, svcCIDR := netip.MustParsePrefix(overlapPodCIDR), netip.MustParsePrefix(overlapServiceCIDR)
	// addrOf is the address every other cluster reaches a pod at, as the Fleet table
	// decides it: the global twin in a remapped cluster, the pod's own address in c4.
	addrOf := func(p *lab.Pod) netip.Addr {
		if r, ok := ranges[p.Node.Cluster.Name]; ok {
			return mcnetv1.MapPrefix(p.IP, podCIDR, r.pod)
		}
		return p.IP
	}
	svcAddr := func(c *lab.Cluster, ip string) string {
		if r, ok := ranges[c.Name]; ok {
			return mcnetv1.MapPrefix(netip.MustParseAddr(ip), svcCIDR, r.svc).String()
		}
		return ip
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
		return "http://" + net.JoinHostPort(addrOf(srv).String(), "8080") + "/"
	}

	t.Run("pod to pod by global address, the sender's global address seen", func(t *testing.T) {
		for _, src := range overlapping {
			for _, dst := range overlapping {
				if src == dst {
					continue
				}
				srv, cli := servers[dst.Name], clients[src.Name]
				if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
					return getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli))
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
					return getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli))
				}); err != nil {
					t.Errorf("round %d, %s -> %s: %v", i, cli, srv, err)
				}
			}
		}
		if a, b := addrOf(clients[c1.Name]), addrOf(other); a == b {
			t.Errorf("two pods share the global address %s", a)
		}
	})

	t.Run("a cluster that overlaps nobody keeps its addresses, and both ends of each pair agree", func(t *testing.T) {
		checkMixedPairs(t, l, dir, cs.Name, c4, overlapping, ranges, servers, clients, addrOf, urlOf)
	})

	t.Run("a NetworkPolicy ipBlock on one remote pod's global /32 admits it and denies its neighbour", func(t *testing.T) {
		checkOverlapPolicy(t, servers[c2.Name], clients[c1.Name], []*lab.Pod{other, clients[c3.Name], clients[c4.Name]}, addrOf, urlOf)
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
			checkServiceByName(t, l, q.from, q.to, web, svcAddr(q.to, ips[q.to.Name]), ips[q.to.Name], clients, servers)
		}

		// The bare name is c3's ClusterSetIP, in c3's own service CIDR (which c1 and c2
		// use too); its endpoints are the exporters' global ClusterIPs, and TCP to it
		// reaches both clusters' servers.
		checkClusterSetIP(t, l, c3, clients[c3.Name], ns, "web", map[*lab.Cluster]string{
			c1: svcAddr(c1, ips[c1.Name]), c2: svcAddr(c2, ips[c2.Name]),
		}, servers)
	})

	t.Run("a headless service answers each pod's global address", func(t *testing.T) {
		// Selector-less, with the slice a StatefulSet's pod would give it, in c1 and c2:
		// the same pod address in both clusters, two global ones. Asked from c3, which
		// is remapped too, and from c4, which is not: the same global answers.
		exportHeadlessDB(t, ns, servers, c1, c2)
		db := "db." + ns + ".svc." + domain
		all := []string{addrOf(servers[c1.Name]).String(), addrOf(servers[c2.Name]).String()}
		slices.Sort(all)
		for _, asker := range []*lab.Cluster{c3, c4} {
			d := digger{pod: clients[asker.Name], server: startClusterDNS(t, l, asker)}
			if err := lab.Eventually(ctx, time.Minute, d.expect(db, "A", all...)); err != nil {
				t.Errorf("from %s: %v", asker.Name, err)
				continue
			}
			for _, c := range []*lab.Cluster{c1, c2} {
				name := "db-0." + c.Name + "." + db
				srv, cli := servers[c.Name], clients[asker.Name]
				if err := lab.Eventually(ctx, 10*time.Second, d.expect(name, "A", addrOf(srv).String())); err != nil {
					t.Errorf("from %s: %v", asker.Name, err)
					continue
				}
				if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
					return getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli))
				}); err != nil {
					t.Errorf("TCP from %s to %s: %v", asker.Name, name, err)
				}
			}
		}
	})

	t.Run("across a mixed pair DNS answers the address the asking cluster reaches", func(t *testing.T) {
		checkMixedServices(t, l, ns, c1, c2, c4, servers, clients, addrOf, svcAddr)
	})

	t.Run("removing a cluster through Git keeps the others' ranges and takes its own away", func(t *testing.T) {
		checkOverlapRemoval(t, cl, c3, ranges, servers, clients, addrOf, urlOf)
	})
}

// checkOverlapPolicy creates, in srv's cluster, a NetworkPolicy selecting srv (app=web)
// whose only ingress rule is an ipBlock of allowed's global /32 on the HTTP port, and
// checks that the lab's NetworkPolicy engine admits allowed and denies each of denied
// (the first a pod of allowed's node, whose global address differs in the last bits;
// then pods of other clusters). Deleting the policy lets them in again, so the denial
// was the policy's.
func checkOverlapPolicy(t *testing.T, srv, allowed *lab.Pod, denied []*lab.Pod, addrOf func(*lab.Pod) netip.Addr, urlOf func(*lab.Pod) string) {
	t.Helper()
	ctx := t.Context()
	c := srv.Node.Cluster
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "web-from-one-remote-pod", Namespace: srv.Namespace},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(addrOf(allowed), 32).String()}}},
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
		if err := getFrom(ctx, denied[0], srv, urlOf(srv), addrOf(denied[0])); err == nil {
			return fmt.Errorf("%s (global %s) still reaches %s", denied[0], addrOf(denied[0]), srv)
		}
		return nil
	}); err != nil {
		t.Fatalf("the policy is not enforced: %v", err)
	}
	if err := lab.Eventually(ctx, 10*time.Second, func(ctx context.Context) error {
		return getFrom(ctx, allowed, srv, urlOf(srv), addrOf(allowed))
	}); err != nil {
		t.Errorf("the admitted pod %s: %v", allowed, err)
	}
	for _, cli := range denied {
		for range 3 {
			if err := getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli)); err == nil {
				t.Errorf("%s (seen as %s) reached %s through a policy admitting only %s", cli, addrOf(cli), srv, addrOf(allowed))
			}
		}
	}
	for range 3 {
		if err := getFrom(ctx, allowed, srv, urlOf(srv), addrOf(allowed)); err != nil {
			t.Errorf("the admitted pod %s, again: %v", allowed, err)
		}
	}

	if err := policies.Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deleted = true
	for _, cli := range denied {
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			return getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli))
		}); err != nil {
			t.Errorf("%s after the policy was deleted: %v", cli, err)
		}
	}
}

// checkOverlapRemoval renders the fleet without the remapped cluster gone, keeping the
// Fleet table of the first render, applies it with prune, and checks that the
// remaining clusters keep their global ranges and addresses while the removed
// cluster's global ranges leave every remaining node.
func checkOverlapRemoval(t *testing.T, l *connectedLab, gone *lab.Cluster, ranges map[string]globalRanges, servers, clients map[string]*lab.Pod,
	addrOf func(*lab.Pod) netip.Addr, urlOf func(*lab.Pod) string) {
	t.Helper()
	ctx := t.Context()
	cs := l.fleet
	var stay []*lab.Cluster
	for _, c := range l.Clusters() {
		if c != gone {
			stay = append(stay, c)
		}
	}
	broker := l.Cluster(cs.Spec.Broker.Cluster)

	smaller := cs.DeepCopy()
	smaller.Spec.Clusters = slices.DeleteFunc(smaller.Spec.Clusters, func(c mcnetv1.ClusterSpec) bool { return c.Name == gone.Name })
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
				return getFrom(ctx, cli, srv, urlOf(srv), addrOf(cli))
			}); err != nil {
				t.Errorf("%s -> %s at the same global addresses after removing %s: %v", src.Name, dst.Name, gone.Name, err)
			}
		}
	}
}

// checkMixedPairs proves the per-pair decision of a mixed fleet between plain, a
// cluster whose networks overlap nobody's, and each of the remapped overlapping
// clusters: every cluster's Fleet table (the object in its own API server) says what
// the table in Git says, plain not remapped; each active gateway's kernel translates
// exactly its own cluster's maps (none on plain's); plain's nodes route the others'
// global ranges, never their real ones, and theirs route plain's real networks; and
// TCP passes both ways, plain dialling global addresses and seen at its real one,
// the others dialling plain's real address and seen at their global ones.
func checkMixedPairs(t *testing.T, l *lab.Lab, dir, fleet string, plain *lab.Cluster, overlapping []*lab.Cluster, ranges map[string]globalRanges,
	servers, clients map[string]*lab.Pod, addrOf func(*lab.Pod) netip.Addr, urlOf func(*lab.Pod) string) {
	t.Helper()
	ctx := t.Context()
	git, err := kustomize.ReadKept(dir, fleet)
	if err != nil || git == nil {
		t.Fatalf("the Fleet table in Git: %v (%v)", err, git)
	}
	for _, c := range l.Clusters() {
		var f mcnetv1.Fleet
		if err := mcsClient(t, c).Get(ctx, client.ObjectKey{Name: fleet}, &f); err != nil {
			t.Fatalf("%s's Fleet table: %v", c.Name, err)
		}
		if d := cmp.Diff(remapDecisions(git), remapDecisions(&f)); d != "" {
			t.Errorf("%s's Fleet table decides otherwise than Git's (-git +%s):\n%s", c.Name, c.Name, d)
		}
		i := slices.IndexFunc(f.Spec.Clusters, func(m mcnetv1.FleetMember) bool { return m.Name == plain.Name })
		if i < 0 || f.Spec.Clusters[i].Remapped || len(f.Spec.Clusters[i].GlobalPodCIDRs)+len(f.Spec.Clusters[i].GlobalServiceCIDRs) > 0 {
			t.Errorf("%s's Fleet table: %s should be a plain member, without global ranges: %+v", c.Name, plain.Name, f.Spec.Clusters)
		}
	}

	for _, c := range l.Clusters() {
		var want []mcnetv1.RemapStatus
		if r, ok := ranges[c.Name]; ok {
			want = []mcnetv1.RemapStatus{{Real: overlapPodCIDR, Global: r.pod.String()}, {Real: overlapServiceCIDR, Global: r.svc.String(), Service: true}}
		}
		if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			gw, err := activeGateway(ctx, c)
			if err != nil {
				return err
			}
			if d := cmp.Diff(want, gw.Status.Remap, cmpopts.EquateEmpty(), cmpopts.SortSlices(func(a, b mcnetv1.RemapStatus) bool { return a.Real < b.Real })); d != "" {
				return fmt.Errorf("%s translates (-want +got):\n%s", gw.Name, d)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	}

	plainNets := []netip.Prefix{plain.PodCIDR, plain.ServiceCIDR}
	for _, c := range l.Clusters() {
		var want, never []netip.Prefix
		if c == plain {
			for _, o := range overlapping {
				want = append(want, ranges[o.Name].pod, ranges[o.Name].svc)
			}
			never = []netip.Prefix{netip.MustParsePrefix(overlapPodCIDR), netip.MustParsePrefix(overlapServiceCIDR)}
		} else {
			want = plainNets
		}
		for _, n := range c.Nodes {
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				routed, err := routedPrefixes(ctx, n)
				if err != nil {
					return err
				}
				var errs []error
				for _, p := range want {
					if !slices.Contains(routed, p) {
						errs = append(errs, fmt.Errorf("%s routes no %s", n.Name, p))
					}
				}
				for _, p := range never {
					if slices.ContainsFunc(routed, p.Overlaps) {
						errs = append(errs, fmt.Errorf("%s routes the overlapping clusters' real %s", n.Name, p))
					}
				}
				if err := errors.Join(errs...); err != nil {
					return fmt.Errorf("%w (table %d: %v)", err, dataplane.DefaultTable, routed)
				}
				return nil
			}); err != nil {
				t.Error(err)
			}
		}
	}

	for _, o := range overlapping {
		for _, p := range []struct{ cli, srv *lab.Pod }{{clients[plain.Name], servers[o.Name]}, {clients[o.Name], servers[plain.Name]}} {
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
				return getFrom(ctx, p.cli, p.srv, urlOf(p.srv), addrOf(p.cli))
			}); err != nil {
				t.Errorf("%s (%s) -> %s at %s: %v", p.cli, p.cli.Node.Cluster.Name, p.srv, addrOf(p.srv), err)
			}
		}
	}
	t.Logf("%s reaches %s at their global addresses and is seen at its real ones; they reach it at %s", plain.Name,
		strings.Join(clusterNames(overlapping), ", "), plain.PodCIDR)
}

// remapDecisions is what a Fleet table decides for each member: remapped or not, and
// at which global ranges.
func remapDecisions(f *mcnetv1.Fleet) map[string]string {
	out := map[string]string{}
	for _, m := range f.Spec.Clusters {
		out[m.Name] = fmt.Sprintf("remapped=%v pods=%v services=%v", m.Remapped, m.GlobalPodCIDRs, m.GlobalServiceCIDRs)
	}
	return out
}

func clusterNames(cs []*lab.Cluster) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}

// routedPrefixes are the destinations of n's mcnet routing table: what n sends to the
// other clusters.
func routedPrefixes(ctx context.Context, n *lab.Node) ([]netip.Prefix, error) {
	out, err := n.Exec(ctx, "ip", "-4", "-o", "route", "show", "table", fmt.Sprint(dataplane.DefaultTable))
	if err != nil {
		return nil, fmt.Errorf("%s: %w\n%s", n.Name, err, out)
	}
	var ps []netip.Prefix
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if p, err := netip.ParsePrefix(f[0]); err == nil {
			ps = append(ps, p)
		}
	}
	return ps, nil
}

// checkServiceByName asks from's cluster DNS for to's own name of the exported service
// name (to.Name+"."+name), wants the address want (realIP is to's ClusterIP, for the
// message), and connects there: to's server must answer.
func checkServiceByName(t *testing.T, l *lab.Lab, from, to *lab.Cluster, name, want, realIP string, clients, servers map[string]*lab.Pod) {
	t.Helper()
	ctx := t.Context()
	d := digger{pod: clients[from.Name], server: startClusterDNS(t, l, from)}
	if err := lab.Eventually(ctx, time.Minute, d.expect(to.Name+"."+name, "A", want)); err != nil {
		t.Errorf("from %s: %v", from.Name, err)
		return
	}
	url := "http://" + net.JoinHostPort(want, "80") + "/"
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		body, err := clients[from.Name].HTTPGet(ctx, url)
		if err == nil && !strings.HasPrefix(body, servers[to.Name].String()+" ") {
			err = fmt.Errorf("answered by %q, want %s", body, servers[to.Name])
		}
		return err
	}); err != nil {
		t.Errorf("%s -> %s's service at %s (real %s): %v", from.Name, to.Name, want, realIP, err)
	}
}

// checkClusterSetIP asks cli's cluster DNS for name's bare clusterset name: the
// ServiceImport's ClusterSetIP, whose endpoints must be exactly want's addresses (by
// exporting cluster), and TCP to it must reach each exporter's server.
func checkClusterSetIP(t *testing.T, l *lab.Lab, asker *lab.Cluster, cli *lab.Pod, ns, name string, want map[*lab.Cluster]string, servers map[string]*lab.Pod) {
	t.Helper()
	ctx := t.Context()
	d := digger{pod: cli, server: startClusterDNS(t, l, asker)}
	vip := clusterSetIP(ctx, t, asker, ns, name)
	if err := lab.Eventually(ctx, 10*time.Second, d.expect(name+"."+ns+".svc.clusterset.local", "A", vip)); err != nil {
		t.Fatal(err)
	}
	var wantEps []string
	for _, a := range want {
		wantEps = append(wantEps, a)
	}
	slices.Sort(wantEps)
	if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
		eps, err := vipEndpoints(ctx, mcsClient(t, asker), ns, name)
		if err == nil && !slices.Equal(eps, wantEps) {
			err = fmt.Errorf("%s's ClusterSetIP %s leads to %v, want %v", asker.Name, vip, eps, wantEps)
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
		body, err := cli.HTTPGet(actx, url)
		missing := false
		for c := range want {
			if err == nil && strings.HasPrefix(body, servers[c.Name].String()+" ") {
				reached[c.Name] = true
			}
			missing = missing || !reached[c.Name]
		}
		if missing {
			return fmt.Errorf("from %s through the ClusterSetIP %s reached %v (last: %q, %v)", asker.Name, vip, reached, body, err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// checkMixedServices exports a Service "mix" (the web servers) from remapped and from
// plain, which overlaps nobody, and checks that each cluster's DNS answers what it
// can reach: plain asks for remapped's name and gets its global ClusterIP, asker and
// remapped ask for plain's and get its real one; each answer connects; asker's
// ClusterSetIP leads to both (remapped's global ClusterIP, plain's real one).
func checkMixedServices(t *testing.T, l *lab.Lab, ns string, asker, remapped, plain *lab.Cluster, servers, clients map[string]*lab.Pod,
	addrOf func(*lab.Pod) netip.Addr, svcAddr func(*lab.Cluster, string) string) {
	t.Helper()
	ctx := t.Context()
	ips := map[string]string{}
	for _, c := range []*lab.Cluster{remapped, plain} {
		svc, err := c.CreateService(ctx, lab.ServiceOptions{Name: "mix", Namespace: ns, Selector: map[string]string{"app": "web"}, Ports: map[int32]int32{80: 8080}})
		if err != nil {
			t.Fatal(err)
		}
		ips[c.Name] = svc.Spec.ClusterIP
		if err := mcsClient(t, c).Create(ctx, &mcsv1alpha1.ServiceExport{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "mix"}}); err != nil {
			t.Fatal(err)
		}
	}
	if svcAddr(plain, ips[plain.Name]) != ips[plain.Name] || svcAddr(remapped, ips[remapped.Name]) == ips[remapped.Name] {
		t.Fatalf("the Fleet table should remap %s and not %s: %s, %s", remapped.Name, plain.Name, svcAddr(remapped, ips[remapped.Name]), svcAddr(plain, ips[plain.Name]))
	}
	mix := "mix." + ns + ".svc.clusterset.local"
	for _, q := range []struct{ from, to *lab.Cluster }{{plain, remapped}, {remapped, plain}, {asker, plain}} {
		checkServiceByName(t, l, q.from, q.to, mix, svcAddr(q.to, ips[q.to.Name]), ips[q.to.Name], clients, servers)
	}
	checkClusterSetIP(t, l, asker, clients[asker.Name], ns, "mix", map[*lab.Cluster]string{
		remapped: svcAddr(remapped, ips[remapped.Name]), plain: ips[plain.Name],
	}, servers)
}
