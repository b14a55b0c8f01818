//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/agent"
	"github.com/mcnet-io/mcnet/kustomize"
)

func objKey(u *unstructured.Unstructured) string {
	return u.GroupVersionKind().GroupKind().String() + "/" + u.GetNamespace() + "/" + u.GetName()
}

// deleteOrder is the reverse of the apply order: workloads before what they use, the
// namespace and the CRDs last.
func deleteOrder(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "CustomResourceDefinition":
		return 3
	case "Namespace":
		return 2
	case "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
		return 1
	}
	return 0
}

// applyPruned applies the kustomization in newDir (none: an uninstall) to c and
// deletes what oldDir had and newDir no longer has, as Flux's prune does.
func applyPruned(ctx context.Context, c *lab.Cluster, oldDir, newDir string) error {
	keep := map[string]bool{}
	if newDir != "" {
		objs, err := lab.BuildKustomization(newDir)
		if err != nil {
			return err
		}
		for _, o := range objs {
			keep[objKey(o)] = true
		}
		if err := c.ApplyKustomization(ctx, newDir); err != nil {
			return err
		}
	}
	old, err := lab.BuildKustomization(oldDir)
	if err != nil {
		return err
	}
	slices.SortStableFunc(old, func(a, b *unstructured.Unstructured) int { return deleteOrder(a) - deleteOrder(b) })
	cl, err := client.New(c.Config, client.Options{})
	if err != nil {
		return err
	}
	for _, o := range old {
		if keep[objKey(o)] {
			continue
		}
		if err := cl.Delete(ctx, o, client.PropagationPolicy("Background")); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("prune %s: %w", objKey(o), err)
		}
	}
	return nil
}

// nodeState reads a node's mcnet links, routes, rules and chains, one per line.
func nodeState(ctx context.Context, n *lab.Node) (string, error) {
	pod := n
	return pod.Exec(ctx, "sh", "-c", `ip -o link show | grep -o 'mcnet-[a-z]*'
ip -o route show table 2711
ip -o -6 route show table 2711 2>/dev/null
ip -o rule show | grep 2711
ip -o -6 rule show | grep 2711
for t in filter nat mangle; do iptables -t $t -S | grep MCNET; ip6tables -t $t -S 2>/dev/null | grep MCNET; done
nft -s list table inet mcnet 2>/dev/null
true`)
}

// TestConnectRemoveCluster removes the last of three clusters from the fleet,
// renders again and applies with prune: its broker identity goes, the garbage
// collector takes its broker copies, and its Endpoint, cables and routes disappear
// from the other clusters while they keep talking. Then the removed cluster's own tree
// is deleted (an uninstall): no mcnet link, route, rule or chain stays on its nodes.
func TestConnectRemoveCluster(t *testing.T) {
	ctx := t.Context()
	cs := connectFleet(mcnetv1.CableVXLAN, mcnetv1.CableVXLAN, mcnetv1.CableWireGuard)
	l := startConnected(t, cs, 2)
	servers, clients := serveOnWorkers(t, l.Lab)
	stay, gone := l.Clusters()[:2], l.Clusters()[2]
	broker := l.Cluster(cs.Spec.Broker.Cluster)
	brokerNS := mcnetv1.DefaultBrokerNamespace

	smaller := cs.DeepCopy()
	smaller.Spec.Clusters = smaller.Spec.Clusters[:2]
	dir := filepath.Join(t.TempDir(), "fleet-repo-2")
	if err := renderFor(l.Lab, smaller, dir); err != nil {
		t.Fatal(err)
	}
	if err := applyPruned(ctx, broker, filepath.Join(l.dir, kustomize.DirBroker), filepath.Join(dir, kustomize.DirBroker)); err != nil {
		t.Fatal(err)
	}
	for _, c := range stay {
		if err := applyPruned(ctx, c, filepath.Join(l.dir, kustomize.DirClusters, c.Name), filepath.Join(dir, kustomize.DirClusters, c.Name)); err != nil {
			t.Fatal(err)
		}
	}

	gs := agent.Scheme()
	absent := func(cfgc *lab.Cluster, ns string) func(context.Context) error {
		return func(ctx context.Context) error {
			cl, err := client.New(cfgc.Config, client.Options{Scheme: gs})
			if err != nil {
				return err
			}
			var errs []error
			for _, o := range []client.Object{&mcnetv1.Endpoint{}, &mcnetv1.Cluster{}} {
				err := cl.Get(ctx, client.ObjectKey{Namespace: ns, Name: gone.Name}, o)
				if !apierrors.IsNotFound(err) {
					errs = append(errs, fmt.Errorf("%s: %T %s/%s still there (%v)", cfgc.Name, o, ns, gone.Name, err))
				}
			}
			return errors.Join(errs...)
		}
	}
	if err := lab.Eventually(ctx, time.Minute, absent(broker, brokerNS)); err != nil {
		t.Fatalf("broker copies not garbage-collected: %v", err)
	}
	for _, c := range stay {
		if err := lab.Eventually(ctx, time.Minute, absent(c, mcnetv1.SystemNamespace)); err != nil {
			t.Fatal(err)
		}
	}
	remaining := &connectedLab{Lab: l.Lab, fleet: smaller, dir: dir, only: stay}
	if err := remaining.waitConnected(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	goneCIDRs := []string{gone.PodCIDR.String(), gone.ServiceCIDR.String()}
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
				for _, p := range append(goneCIDRs, "mcnet-wg") {
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
	for _, src := range stay {
		for _, dst := range stay {
			if src == dst {
				continue
			}
			url := "http://" + net.JoinHostPort(servers[dst.Name].IP.String(), "8080") + "/"
			if err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error { return get(ctx, clients[src.Name], servers[dst.Name], url) }); err != nil {
				t.Errorf("%s -> %s after removing %s: %v", src.Name, dst.Name, gone.Name, err)
			}
		}
	}

	// Uninstall: everything rendered for the removed cluster is deleted from it.
	for _, n := range gone.Nodes {
		if s, err := nodeState(ctx, n); err != nil || !strings.Contains(s, "mcnet-") {
			t.Fatalf("%s: no mcnet state before the uninstall to remove (%v): %q", n.Name, err, s)
		}
	}
	if err := applyPruned(ctx, gone, filepath.Join(l.dir, kustomize.DirClusters, gone.Name), ""); err != nil {
		t.Fatal(err)
	}
	if err := applyPruned(ctx, gone, filepath.Join(l.dir, kustomize.DirCRDs), ""); err != nil {
		t.Fatal(err)
	}
	if err := lab.Eventually(ctx, time.Minute, func(ctx context.Context) error {
		var errs []error
		for _, n := range gone.Nodes {
			s, err := nodeState(ctx, n)
			if err != nil {
				return err
			}
			if s = strings.TrimSpace(s); s != "" {
				errs = append(errs, fmt.Errorf("%s keeps mcnet state after the uninstall:\n%s", n.Name, s))
			}
		}
		return errors.Join(errs...)
	}); err != nil {
		t.Fatal(err)
	}
}
