// Package testenv starts real kube-apiservers (with etcd) for tests and applies rendered
// mcnet trees to them the way Flux does. The binaries come from `make tools`
// (KUBEBUILDER_ASSETS); without them tests skip, except under CI=true where they fail.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	mcsv1alpha1 "sigs.k8s.io/mcs-api/pkg/apis/v1alpha1"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/kustomize"
)

var loadFleet = fleet.Load

// RequireAssets skips the test when the API server binaries are not available, or fails
// it under CI=true.
func RequireAssets(t testing.TB) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") != "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests through make test")
	}
	t.Skip("KUBEBUILDER_ASSETS is not set: run make test (it builds kube-apiserver and etcd)")
}

// StartAPIServers starts n real API servers side by side and stops them when the test
// ends.
func StartAPIServers(t testing.TB, n int) []*rest.Config {
	t.Helper()
	return startAPIServers(t, make([][]string, n))
}

// StartClusterAPIServers starts one real API server per cluster, serving Services from
// the cluster's service CIDRs (so the rendered mcnet-dns ClusterIPs are accepted), and
// stops them when the test ends.
func StartClusterAPIServers(t testing.TB, clusters []mcnetv1.ClusterSpec) []*rest.Config {
	t.Helper()
	ranges := make([][]string, len(clusters))
	for i, c := range clusters {
		ranges[i] = c.ServiceCIDRs
	}
	return startAPIServers(t, ranges)
}

func startAPIServers(t testing.TB, serviceCIDRs [][]string) []*rest.Config {
	t.Helper()
	RequireAssets(t)
	n := len(serviceCIDRs)
	cfgs := make([]*rest.Config, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		// envtest gives each etcd and kube-apiserver 20 s to become ready. Several
		// start at once here, and in make test beside the lab suites on two cores;
		// there CI saw both retried out ("timeout waiting for process kube-apiserver
		// to start successfully"). Starting is the fixture, not what is tested.
		env := &envtest.Environment{ControlPlaneStartTimeout: 2 * time.Minute}
		if len(serviceCIDRs[i]) > 0 {
			env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", strings.Join(serviceCIDRs[i], ","))
		}
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

// Scheme has the built-in kinds, CRDs, mcnet's and the MCS API's.
func Scheme(t testing.TB) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, mcnetv1.AddToScheme, mcsv1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Client returns a client for cfg with Scheme.
func Client(t testing.TB, cfg *rest.Config) client.Client {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: Scheme(t)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Repo is a rendered tree kustomize can build from memory.
type Repo struct {
	fs filesys.FileSystem
}

// NewRepo loads a rendered tree.
func NewRepo(t testing.TB, tree kustomize.Tree) *Repo {
	t.Helper()
	fsys := filesys.MakeFsInMemory()
	for p, data := range tree {
		if err := fsys.WriteFile(path.Join("/repo", p), data); err != nil {
			t.Fatal(err)
		}
	}
	return &Repo{fs: fsys}
}

// Build runs kustomize on one directory of the tree, as Flux's kustomize-controller does.
func (r *Repo) Build(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(r.fs, "/repo/"+dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var objs []*unstructured.Unstructured
	for _, res := range res.Resources() {
		m, err := res.Map()
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
	return objs
}

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

// Apply applies objects server-side as Flux's kustomize-controller would (field owner,
// forced ownership, prerequisites first) and fails the test on any refusal. CRDs are
// waited on until Established.
func Apply(ctx context.Context, t testing.TB, cfg *rest.Config, objs []*unstructured.Unstructured) {
	t.Helper()
	c := Client(t, cfg)
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int { return applyOrder(a) - applyOrder(b) })
	for _, o := range objs {
		o.SetManagedFields(nil)
		if err := c.Patch(ctx, o, client.Apply, client.FieldOwner("kustomize-controller"), client.ForceOwnership); err != nil {
			t.Errorf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
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

// Token mints a short-lived token for a ServiceAccount.
func Token(ctx context.Context, t testing.TB, admin *rest.Config, ns, sa string) string {
	t.Helper()
	cs, err := kubernetes.NewForConfig(admin)
	if err != nil {
		t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, sa, err)
	}
	return tr.Status.Token
}

// As returns a rest.Config that authenticates with a token minted for a ServiceAccount.
func As(ctx context.Context, t testing.TB, admin *rest.Config, ns, sa string) *rest.Config {
	t.Helper()
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = Token(ctx, t, admin, ns, sa)
	return cfg
}

// WriteKubeconfig writes cfg (token or client certificate) as a kubeconfig file in dir.
func WriteKubeconfig(t testing.TB, dir, name string, cfg *rest.Config) string {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters[name] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: cfg.BearerToken, ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	kc.CurrentContext = name
	p := filepath.Join(dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Eventually polls cond until it returns nil or the timeout passes, then fails the test
// with cond's last error.
func Eventually(ctx context.Context, t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		last = cond(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%s: not within %s: %v", what, timeout, fmt.Errorf("%w (last: %v)", err, last))
	}
}

// Fleet is a rendered fleet installed the way Flux installs it (CRDs, the broker on its
// cluster, each cluster's overlay) on one real API server per cluster.
type Fleet struct {
	// Set is the loaded fleet.
	Set *mcnetv1.ClusterSet
	// Tree is what was rendered.
	Tree kustomize.Tree
	// Configs are administrator configs by cluster name.
	Configs map[string]*rest.Config
	// Broker is the administrator config of the broker's cluster.
	Broker *rest.Config
}

// InstallFleet renders the fleet file and installs it on fresh API servers.
func InstallFleet(ctx context.Context, t testing.TB, fleetFile string) *Fleet {
	t.Helper()
	cs, err := loadFleet(fleetFile)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := kustomize.Render(cs, kustomize.Options{Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	repo := NewRepo(t, tree)
	cfgs := StartClusterAPIServers(t, cs.Spec.Clusters)
	f := &Fleet{Set: cs, Tree: tree, Configs: map[string]*rest.Config{}}
	for i, c := range cs.Spec.Clusters {
		f.Configs[c.Name] = cfgs[i]
		Apply(ctx, t, cfgs[i], repo.Build(t, kustomize.DirCRDs))
		if c.Name == cs.Spec.Broker.Cluster {
			f.Broker = cfgs[i]
			Apply(ctx, t, cfgs[i], repo.Build(t, kustomize.DirBroker))
		}
		Apply(ctx, t, cfgs[i], repo.Build(t, path.Join(kustomize.DirClusters, c.Name)))
	}
	return f
}

// ControllerKubeconfigs writes the two kubeconfigs a cluster's mcnet-controller runs
// with: its rendered ServiceAccount locally and its own identity on the broker.
func (f *Fleet) ControllerKubeconfigs(ctx context.Context, t testing.TB, dir, cluster string) (local, broker string) {
	t.Helper()
	local = WriteKubeconfig(t, dir, cluster, As(ctx, t, f.Configs[cluster], mcnetv1.SystemNamespace, "mcnet-controller"))
	broker = WriteKubeconfig(t, dir, cluster+"-broker", As(ctx, t, f.Broker, f.Set.Spec.Broker.Namespace, kustomize.BrokerServiceAccount(cluster)))
	return local, broker
}

// AgentConfig is the config the render wrote for a cluster's components, read the way
// they read it.
func (f *Fleet) AgentConfig(t testing.TB, cluster string) *mcnetv1.AgentConfig {
	t.Helper()
	c, err := agentconfig.Parse(f.Tree[path.Join(kustomize.DirClusters, cluster, mcnetv1.AgentConfigKey)])
	if err != nil {
		t.Fatalf("config of cluster %s: %v", cluster, err)
	}
	return c
}

// UnusedTCPAddr returns a loopback TCP address nothing listens on: free for a server
// the test starts, or a peer that is down.
func UnusedTCPAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
