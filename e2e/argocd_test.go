package e2e

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/e2e/gitops"
	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/internal/testenv"
	"github.com/mcnet-io/mcnet/kustomize"
)

// TestArgoCD checks the rendered argocd/ directory against what Argo CD would do with it,
// short of running Argo CD (which cannot run here): Argo CD's own CRDs, at the pinned
// release, accept the AppProject and Applications server-side on the management cluster;
// the clusters are registered under their fleet names as Argo CD cluster Secrets; each
// Application's path, built the way Argo CD builds it (kustomize defaults, RootOnly load
// restrictions, from a checkout), applies cleanly to its destination in sync-wave order,
// and the clusters end up with mcnet's CRDs, components and broker.
func TestArgoCD(t *testing.T) {
	testenv.RequireAssets(t)
	ctx := t.Context()
	root, err := lab.RepoRoot("")
	if err != nil {
		t.Fatal(err)
	}
	argo, err := gitops.LoadArgoCD(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := fleet.Load(filepath.Join(root, "examples", "fleet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "v0.0.0-test"})
	if err != nil {
		t.Fatal(err)
	}
	checkout := filepath.Join(t.TempDir(), "fleet-repo")
	if err := kustomize.Write(filepath.Join(checkout, cs.Spec.GitOps.Path), tree); err != nil {
		t.Fatal(err)
	}

	// The broker cluster doubles as Argo CD's management cluster.
	cfgs := testenv.StartClusterAPIServers(t, cs.Spec.Clusters)
	byName := map[string]*rest.Config{}
	for i, c := range cs.Spec.Clusters {
		byName[c.Name] = cfgs[i]
	}
	mgmt := byName[cs.Spec.Broker.Cluster]
	objs, err := lab.DecodeYAML(argo.CRDs)
	if err != nil {
		t.Fatal(err)
	}
	applyWave(ctx, t, mgmt, "argocd-crds", objs)

	// `argocd cluster add CONTEXT --name NAME` leaves one Secret per cluster; Applications
	// name their destination by that name.
	ns := &unstructured.Unstructured{}
	ns.SetAPIVersion("v1")
	ns.SetKind("Namespace")
	ns.SetName("argocd")
	applyWave(ctx, t, mgmt, "argocd-namespace", []*unstructured.Unstructured{ns})
	for name, cfg := range byName {
		applyWave(ctx, t, mgmt, "argocd-clusters", []*unstructured.Unstructured{argoClusterSecret(t, name, cfg)})
	}

	// The app of apps: argocd/ applied as Argo CD applies it, server-side.
	appObjs, err := gitops.BuildArgoCDSource(checkout, filepath.Join(cs.Spec.GitOps.Path, kustomize.DirArgoCD), "mcnet-apps")
	if err != nil {
		t.Fatal(err)
	}
	applyWave(ctx, t, mgmt, "mcnet-apps", appObjs)

	// Read back what the API server accepted and sync it the way the application
	// controller would: waves in order, each Application's path built and applied to its
	// destination.
	mc := testenv.Client(t, mgmt)
	var apps unstructured.UnstructuredList
	apps.SetGroupVersionKind(schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "ApplicationList"})
	if err := mc.List(ctx, &apps, client.InNamespace("argocd")); err != nil {
		t.Fatal(err)
	}
	if got, want := len(apps.Items), 2*len(cs.Spec.Clusters)+1; got != want {
		t.Fatalf("%d Applications accepted, want %d (CRDs and components per cluster, the broker)", got, want)
	}
	project := &unstructured.Unstructured{}
	project.SetGroupVersionKind(schema.GroupVersionKind{Group: "argoproj.io", Version: "v1alpha1", Kind: "AppProject"})
	if err := mc.Get(ctx, client.ObjectKey{Namespace: "argocd", Name: "mcnet"}, project); err != nil {
		t.Fatalf("AppProject: %v", err)
	}
	slices.SortStableFunc(apps.Items, func(a, b unstructured.Unstructured) int {
		return cmp.Or(cmp.Compare(syncWave(a), syncWave(b)), cmp.Compare(a.GetName(), b.GetName()))
	})
	for _, app := range apps.Items {
		repo, _, _ := unstructured.NestedString(app.Object, "spec", "source", "repoURL")
		path, _, _ := unstructured.NestedString(app.Object, "spec", "source", "path")
		dest, _, _ := unstructured.NestedStringMap(app.Object, "spec", "destination")
		if err := projectPermits(project, repo, dest["name"]); err != nil {
			t.Errorf("Application %s: %v", app.GetName(), err)
			continue
		}
		cfg := argoDestination(ctx, t, mc, dest)
		objs, err := gitops.BuildArgoCDSource(checkout, path, app.GetName())
		if err != nil {
			t.Fatal(err)
		}
		dc := testenv.Client(t, cfg)
		for _, o := range objs {
			namespaced, err := dc.IsObjectNamespaced(o)
			if err == nil && namespaced && o.GetNamespace() == "" {
				o.SetNamespace(dest["namespace"])
			}
			gitops.Track(app.GetName(), o)
		}
		applyWave(ctx, t, cfg, app.GetName(), objs)
	}

	// What a user would look at: every cluster runs mcnet's components (as objects), the
	// broker holds one identity per cluster, all of it tracked by its Application.
	for _, c := range cs.Spec.Clusters {
		cl := testenv.Client(t, byName[c.Name])
		var d appsv1.Deployment
		if err := cl.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: "mcnet-controller"}, &d); err != nil {
			t.Errorf("cluster %s: %v", c.Name, err)
			continue
		}
		if got, want := d.Annotations[gitops.ArgoTrackingID], "mcnet-"+c.Name+":apps/Deployment:mcnet-system/mcnet-controller"; got != want {
			t.Errorf("cluster %s: controller tracking id %q, want %q", c.Name, got, want)
		}
		for _, ds := range []string{"mcnet-gateway", "mcnet-route-agent"} {
			if err := cl.Get(ctx, client.ObjectKey{Namespace: mcnetv1.SystemNamespace, Name: ds}, &appsv1.DaemonSet{}); err != nil {
				t.Errorf("cluster %s: %v", c.Name, err)
			}
		}
		var crd apiextensionsv1.CustomResourceDefinition
		if err := cl.Get(ctx, client.ObjectKey{Name: "gateways.mcnet.io"}, &crd); err != nil {
			t.Errorf("cluster %s: %v", c.Name, err)
		}
		broker := testenv.Client(t, byName[cs.Spec.Broker.Cluster])
		sa := kustomize.BrokerServiceAccount(c.Name)
		if err := broker.Get(ctx, client.ObjectKey{Namespace: cs.Spec.Broker.Namespace, Name: sa}, &corev1.ServiceAccount{}); err != nil {
			t.Errorf("broker identity of %s: %v", c.Name, err)
		}
	}
}

func syncWave(u unstructured.Unstructured) int {
	w, _ := strconv.Atoi(u.GetAnnotations()[gitops.ArgoSyncWave])
	return w
}

// projectPermits checks an Application against its AppProject's source repositories and
// destinations, as Argo CD refuses to sync what the project does not allow.
func projectPermits(project *unstructured.Unstructured, repo, destName string) error {
	repos, _, _ := unstructured.NestedStringSlice(project.Object, "spec", "sourceRepos")
	if !slices.Contains(repos, repo) && !slices.Contains(repos, "*") {
		return fmt.Errorf("repository %s not in project %s's sourceRepos %v", repo, project.GetName(), repos)
	}
	dests, _, _ := unstructured.NestedSlice(project.Object, "spec", "destinations")
	for _, d := range dests {
		if m, ok := d.(map[string]any); ok && (m["name"] == destName || m["name"] == "*") {
			return nil
		}
	}
	return fmt.Errorf("destination %q not in project %s", destName, project.GetName())
}

// argoClusterSecret is the Secret `argocd cluster add` writes for a cluster.
func argoClusterSecret(t *testing.T, name string, cfg *rest.Config) *unstructured.Unstructured {
	t.Helper()
	config := fmt.Sprintf(`{"tlsClientConfig":{"caData":%q,"certData":%q,"keyData":%q}}`,
		b64(cfg.CAData), b64(cfg.CertData), b64(cfg.KeyData))
	s := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Secret",
		"metadata": map[string]any{
			"name": "cluster-" + name, "namespace": "argocd",
			"labels": map[string]any{"argocd.argoproj.io/secret-type": "cluster"},
		},
		"stringData": map[string]any{"name": name, "server": cfg.Host, "config": config},
	}}
	return s
}

// argoDestination resolves an Application's destination the way Argo CD does: by server
// URL, or by name through the registered cluster Secrets.
func argoDestination(ctx context.Context, t *testing.T, mc client.Client, dest map[string]string) *rest.Config {
	t.Helper()
	var secrets corev1.SecretList
	if err := mc.List(ctx, &secrets, client.InNamespace("argocd"), client.MatchingLabels{"argocd.argoproj.io/secret-type": "cluster"}); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		name, server := string(s.Data["name"]), string(s.Data["server"])
		if (dest["server"] != "" && dest["server"] == server) || (dest["server"] == "" && dest["name"] == name) {
			return argoClusterConfig(t, s)
		}
	}
	t.Fatalf("destination %v: no cluster registered under that name or server", dest)
	return nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// argoClusterConfig turns a cluster Secret back into a client configuration.
func argoClusterConfig(t *testing.T, s corev1.Secret) *rest.Config {
	t.Helper()
	var c struct {
		BearerToken     string `json:"bearerToken"`
		TLSClientConfig struct {
			CAData, CertData, KeyData string
		} `json:"tlsClientConfig"`
	}
	if err := json.Unmarshal(s.Data["config"], &c); err != nil {
		t.Fatalf("cluster secret %s: %v", s.Name, err)
	}
	dec := func(v string) []byte {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("cluster secret %s: %v", s.Name, err)
		}
		return b
	}
	return &rest.Config{
		Host:            string(s.Data["server"]),
		BearerToken:     c.BearerToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: dec(c.TLSClientConfig.CAData), CertData: dec(c.TLSClientConfig.CertData), KeyData: dec(c.TLSClientConfig.KeyData)},
	}
}

// applyWave applies one Application's objects server-side as Argo CD does with
// ServerSideApply=true (its field manager, forced), CRDs and namespaces first, and waits
// for CRDs to be served before the next wave.
func applyWave(ctx context.Context, t *testing.T, cfg *rest.Config, app string, objs []*unstructured.Unstructured) {
	t.Helper()
	c := testenv.Client(t, cfg)
	rank := func(u *unstructured.Unstructured) int {
		switch u.GetKind() {
		case "CustomResourceDefinition":
			return 0
		case "Namespace":
			return 1
		}
		return 2
	}
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return rank(a) - rank(b) })
	for _, o := range objs {
		o.SetManagedFields(nil)
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner(gitops.ArgoFieldManager), client.ForceOwnership); err != nil {
			t.Fatalf("%s: apply %s %s/%s: %v", app, o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		if o.GetKind() != "CustomResourceDefinition" {
			continue
		}
		err := lab.Eventually(ctx, 30*time.Second, func(ctx context.Context) error {
			var crd apiextensionsv1.CustomResourceDefinition
			if err := c.Get(ctx, client.ObjectKey{Name: o.GetName()}, &crd); err != nil {
				return err
			}
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
			return fmt.Errorf("CRD %s not established", o.GetName())
		})
		if err != nil {
			t.Fatalf("%s: %v", app, err)
		}
	}
}
