package kustomize_test

import (
	"context"
	"errors"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/kustomize"
)

// startAPIServers starts n real kube-apiservers (with their etcd) from the binaries
// `make tools` built. Without them the test skips, except in CI where it fails.
func startAPIServers(t *testing.T, n int) []*rest.Config {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests through make test")
		}
		t.Skip("KUBEBUILDER_ASSETS is not set: run make test (it builds kube-apiserver and etcd)")
	}
	cfgs := make([]*rest.Config, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		env := &envtest.Environment{}
		t.Cleanup(func() {
			if err := env.Stop(); err != nil {
				t.Logf("stop API server: %v", err)
			}
		})
		wg.Go(func() { cfgs[i], errs[i] = env.Start() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("start API servers: %v", err)
	}
	return cfgs
}

func newScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, mcnetv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// build runs kustomize on one rendered directory, as Flux's kustomize-controller does.
func build(t *testing.T, fsys filesys.FileSystem, dir string) []*unstructured.Unstructured {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(fsys, "/repo/"+dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

// applyOrder puts cluster-wide prerequisites first, as Flux's apply does.
func applyOrder(u *unstructured.Unstructured) int {
	switch u.GetKind() {
	case "CustomResourceDefinition":
		return 0
	case "Namespace":
		return 1
	case "ServiceAccount", "ClusterRole", "Role", "ValidatingAdmissionPolicy":
		return 2
	}
	return 3
}

// apply applies objects server-side with a field manager, the way Flux does, and fails
// the test on any object the API server refuses.
func apply(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return applyOrder(a) - applyOrder(b) })
	for _, o := range objs {
		o.SetManagedFields(nil)
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner("kustomize-controller"), client.ForceOwnership); err != nil {
			t.Errorf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
}

func waitEstablished(ctx context.Context, t *testing.T, c client.Client, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: o.GetName()}, &crd); err != nil {
				return false, nil
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			t.Fatalf("CRD %s not Established: %v", o.GetName(), err)
		}
	}
}

// TestRenderedTreeAppliesToRealAPIServers renders a three-cluster fleet and applies, per
// cluster, the CRDs and then the cluster's overlay (and the broker on its cluster) to real
// API servers, as Flux would; then checks the broker's RBAC and admission policy with the
// clusters' own identities.
func TestRenderedTreeAppliesToRealAPIServers(t *testing.T) {
	ctx := t.Context()
	cs, err := fleet.Load("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	fsys := filesys.MakeFsInMemory()
	for p, data := range tree {
		if err := fsys.WriteFile(path.Join("/repo", p), data); err != nil {
			t.Fatal(err)
		}
	}
	cfgs := startAPIServers(t, len(cs.Spec.Clusters))
	scheme := newScheme(t)
	clients := map[string]client.Client{}
	configs := map[string]*rest.Config{}
	for i, c := range cs.Spec.Clusters {
		cl, err := client.New(cfgs[i], client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		clients[c.Name], configs[c.Name] = cl, cfgs[i]
	}

	for _, c := range cs.Spec.Clusters {
		cl := clients[c.Name]
		crds := build(t, fsys, kustomize.DirCRDs)
		apply(ctx, t, cl, crds)
		waitEstablished(ctx, t, cl, crds)
		// A fresh client re-discovers the API, now with the new kinds.
		fresh, err := client.New(configs[c.Name], client.Options{Scheme: scheme})
		if err != nil {
			t.Fatal(err)
		}
		clients[c.Name] = fresh
		if c.Name == cs.Spec.Broker.Cluster {
			apply(ctx, t, fresh, build(t, fsys, kustomize.DirBroker))
		}
		apply(ctx, t, fresh, build(t, fsys, path.Join(kustomize.DirClusters, c.Name)))
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("workloads are configured for their cluster", func(t *testing.T) {
		for _, c := range cs.Spec.Clusters {
			var ds unstructured.Unstructured
			ds.SetAPIVersion("apps/v1")
			ds.SetKind("DaemonSet")
			if err := clients[c.Name].Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: "mcnet-gateway"}, &ds); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			args, _, _ := unstructured.NestedSlice(ds.Object, "spec", "template", "spec", "containers")
			if s := stringOf(args); !strings.Contains(s, "--cluster-id="+c.Name) || !strings.Contains(s, "--cable="+string(c.Cable)) {
				t.Errorf("%s gateway args: %s", c.Name, s)
			}
		}
	})

	t.Run("broker identities write only their own objects", func(t *testing.T) {
		testBrokerScoping(ctx, t, cs, configs[cs.Spec.Broker.Cluster], clients[cs.Spec.Broker.Cluster])
	})

	t.Run("agents can do their jobs and no more", func(t *testing.T) {
		for _, c := range cs.Spec.Clusters {
			testAgentRBAC(ctx, t, configs[c.Name], c.Name)
		}
	})
}

func stringOf(v any) string {
	b, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(&map[string]any{"v": v})
	return strings.ReplaceAll(strings.TrimSpace(strings.Join(flatten(b), " ")), "  ", " ")
}

func flatten(v any) []string {
	switch x := v.(type) {
	case map[string]any:
		var out []string
		for _, e := range x {
			out = append(out, flatten(e)...)
		}
		return out
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, flatten(e)...)
		}
		return out
	case string:
		return []string{x}
	}
	return nil
}

// impersonate returns a client that authenticates with a token minted for a
// ServiceAccount, as the component using it would.
func impersonate(ctx context.Context, t *testing.T, admin *rest.Config, ns, sa string) client.Client {
	t.Helper()
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(600))},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = tr.Status.Token
	c, err := client.New(cfg, client.Options{Scheme: newScheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ptr[T any](v T) *T { return &v }

func endpoint(ns, cluster string) *mcnetv1.Endpoint {
	return &mcnetv1.Endpoint{
		ObjectMeta: metav1.ObjectMeta{
			Name:      cluster,
			Namespace: ns,
			Labels:    map[string]string{mcnetv1.ClusterLabel: cluster},
		},
		Spec: mcnetv1.EndpointSpec{
			ClusterID: cluster, Hostname: cluster + "-gw", Cable: mcnetv1.CableWireGuard, Port: 51820,
			PrivateIPs: []string{"198.18.0.10"}, Subnets: []string{"10.10.0.0/16"},
		},
	}
}

func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: want 403 Forbidden, got %v", what, err)
	}
}

func testBrokerScoping(ctx context.Context, t *testing.T, cs *mcnetv1.ClusterSet, admin *rest.Config, adminClient client.Client) {
	ns := cs.Spec.Broker.Namespace
	east := impersonate(ctx, t, admin, ns, kustomize.BrokerServiceAccount("east"))
	west := impersonate(ctx, t, admin, ns, kustomize.BrokerServiceAccount("west"))

	if err := east.Create(ctx, endpoint(ns, "east")); err != nil {
		t.Fatalf("east publishes its own Endpoint: %v", err)
	}
	if err := west.Create(ctx, endpoint(ns, "west")); err != nil {
		t.Fatalf("west publishes its own Endpoint: %v", err)
	}
	var list mcnetv1.EndpointList
	if err := east.List(ctx, &list, client.InNamespace(ns)); err != nil || len(list.Items) != 2 {
		t.Errorf("east lists every Endpoint: %d items, %v", len(list.Items), err)
	}

	forged := endpoint(ns, "west")
	forged.Name = "west-forged"
	wantForbidden(t, "east creates an Endpoint labelled west", east.Create(ctx, forged))

	var westEP mcnetv1.Endpoint
	if err := east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "west"}, &westEP); err != nil {
		t.Fatal(err)
	}
	westEP.Spec.PrivateIPs = []string{"198.18.0.66"}
	wantForbidden(t, "east updates west's Endpoint", east.Update(ctx, &westEP))
	relabel := westEP.DeepCopy()
	relabel.Labels[mcnetv1.ClusterLabel] = "east"
	wantForbidden(t, "east relabels west's Endpoint as its own", east.Update(ctx, relabel))
	wantForbidden(t, "east deletes west's Endpoint", east.Delete(ctx, &westEP))

	var secrets corev1.SecretList
	wantForbidden(t, "east lists Secrets on the broker", east.List(ctx, &secrets, client.InNamespace(ns)))
	wantForbidden(t, "east reads a Secret on the broker", east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "anything"}, &corev1.Secret{}))
	wantForbidden(t, "east writes outside the broker namespace", east.Create(ctx, endpoint("default", "east")))

	var own mcnetv1.Endpoint
	if err := east.Get(ctx, client.ObjectKey{Namespace: ns, Name: "east"}, &own); err != nil {
		t.Fatal(err)
	}
	own.Spec.PublicIPs = []string{"198.19.0.10"}
	if err := east.Update(ctx, &own); err != nil {
		t.Errorf("east updates its own Endpoint: %v", err)
	}
	if err := east.Delete(ctx, &own); err != nil {
		t.Errorf("east withdraws its own Endpoint: %v", err)
	}
	// The policy binds cluster identities only: an administrator may still clean up.
	if err := adminClient.Delete(ctx, &westEP); err != nil {
		t.Errorf("admin deletes west's Endpoint: %v", err)
	}
}

func testAgentRBAC(ctx context.Context, t *testing.T, cfg *rest.Config, cluster string) {
	ns := mcnetv1.SystemNamespace
	controller := impersonate(ctx, t, cfg, ns, "mcnet-controller")
	gateway := impersonate(ctx, t, cfg, ns, "mcnet-gateway")
	agent := impersonate(ctx, t, cfg, ns, "mcnet-route-agent")

	mirror := &mcnetv1.Cluster{
		ObjectMeta: metav1.ObjectMeta{Name: "remote", Namespace: ns},
		Spec:       mcnetv1.ClusterObjSpec{ClusterID: "remote", PodCIDRs: []string{"10.99.0.0/16"}, ServiceCIDRs: []string{"10.199.0.0/16"}, Cable: mcnetv1.CableVXLAN},
	}
	if err := controller.Create(ctx, mirror); err != nil {
		t.Errorf("%s: controller mirrors a remote Cluster: %v", cluster, err)
	}
	gw := &mcnetv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "gw-node", Namespace: ns}}
	if err := gateway.Create(ctx, gw); err != nil {
		t.Fatalf("%s: gateway creates its Gateway: %v", cluster, err)
	}
	gw.Status.HAStatus = mcnetv1.HAActive
	if err := gateway.Status().Update(ctx, gw); err != nil {
		t.Errorf("%s: gateway writes Gateway status: %v", cluster, err)
	}
	var clusters mcnetv1.ClusterList
	if err := agent.List(ctx, &clusters, client.InNamespace(ns)); err != nil {
		t.Errorf("%s: route agent lists Clusters: %v", cluster, err)
	}
	wantForbidden(t, cluster+": route agent deletes a Cluster", agent.Delete(ctx, mirror))
	for name, c := range map[string]client.Client{"controller": controller, "gateway": gateway, "route agent": agent} {
		var secrets corev1.SecretList
		wantForbidden(t, cluster+": "+name+" lists Secrets", c.List(ctx, &secrets))
	}
}
