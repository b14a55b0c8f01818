package gitops

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mcnet-io/mcnet/e2e/lab"
	"github.com/mcnet-io/mcnet/internal/testenv"
)

// TestFlux runs the pinned source-controller and kustomize-controller against a real API
// server: a commit pushed to the loopback Git server ends up applied, and a second commit
// replaces it.
func TestFlux(t *testing.T) {
	testenv.RequireAssets(t)
	ctx := t.Context()
	root, err := lab.RepoRoot("")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := LoadFlux(ctx, root)
	if errors.Is(err, ErrFluxNotBuilt) && os.Getenv("CI") != "true" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg := testenv.StartAPIServers(t, 1)[0]
	kubeconfig := testenv.WriteKubeconfig(t, t.TempDir(), "flux", cfg)

	gs, err := StartGitServer(filepath.Join(t.TempDir(), "git"))
	if err != nil {
		t.Fatal(err)
	}
	defer gs.Close()
	url, err := gs.CreateRepo(ctx, "repo", "main")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	push := func(value string) string {
		t.Helper()
		cm := fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello, namespace: default}\ndata: {value: %q}\n", value)
		if err := os.MkdirAll(filepath.Join(work, "app"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "app", "cm.yaml"), []byte(cm), 0o644); err != nil {
			t.Fatal(err)
		}
		rev, err := CommitAndPush(ctx, work, url, "main", value)
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	push("one")

	c := testenv.Client(t, cfg)
	apply := func(y string) {
		t.Helper()
		objs, err := lab.DecodeYAML([]byte(y))
		if err != nil {
			t.Fatal(err)
		}
		testenv.Apply(ctx, t, cfg, objs)
	}
	apply(string(rel.CRDs))
	apply(fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata: {name: flux-system}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: repo, namespace: flux-system}
spec: {interval: 2s, url: %q, ref: {branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: app, namespace: flux-system}
spec: {interval: 5s, path: ./app, prune: true, sourceRef: {kind: GitRepository, name: repo}}
`, url))

	f, err := StartFlux(rel, FluxOptions{Kubeconfig: kubeconfig, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = f.Stop(context.Background())
		if t.Failed() {
			for _, l := range []string{f.SourceLog, f.KustomizeLog} {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, b)
			}
		}
	}()
	cs := kubernetes.NewForConfigOrDie(cfg)
	want := func(value string) {
		t.Helper()
		testenv.Eventually(ctx, t, 2*time.Minute, "ConfigMap value "+value, func(ctx context.Context) error {
			if err := f.Exited(); err != nil {
				return err
			}
			cm, err := cs.CoreV1().ConfigMaps("default").Get(ctx, "hello", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if cm.Data["value"] != value {
				return fmt.Errorf("value %q", cm.Data["value"])
			}
			return nil
		})
	}
	want("one")
	push("two")
	want("two")
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: "default", Name: "hello"}, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Labels["kustomize.toolkit.fluxcd.io/name"] != "app" {
		t.Errorf("ConfigMap labels %v: not applied by Flux", cm.Labels)
	}
}
