package kustomize

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/agentconfig"
	"github.com/mcnet-io/mcnet/internal/fleet"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the current render")

func loadFleet(t *testing.T) *mcnetv1.ClusterSet {
	t.Helper()
	cs, err := fleet.Load("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

var testOptions = Options{Version: "v1.2.3", RepoURL: "https://git.example.com/platform/fleet.git"}

// TestRenderGolden compares the whole tree with testdata/golden (go test -update rewrites it).
func TestRenderGolden(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "golden")
	if *update {
		if err := os.RemoveAll(golden); err != nil {
			t.Fatal(err)
		}
		if err := Write(golden, tree); err != nil {
			t.Fatal(err)
		}
	}
	want := readTree(t, golden)
	got := withIndex(tree)
	if diff := cmp.Diff(stringify(want), stringify(got)); diff != "" {
		t.Errorf("render differs from testdata/golden (-want +got); run go test ./kustomize -update if intended:\n%s", diff)
	}
}

func stringify(t Tree) map[string]string {
	m := make(map[string]string, len(t))
	for p, b := range t {
		m[p] = string(b)
	}
	return m
}

func readTree(t *testing.T, dir string) Tree {
	t.Helper()
	tree := Tree{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		tree[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func TestRenderIsDeterministic(t *testing.T) {
	cs := loadFleet(t)
	first, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		// Reorder the fleet's clusters: the output must not depend on input order.
		c := loadFleet(t)
		n := len(c.Spec.Clusters)
		c.Spec.Clusters = append(c.Spec.Clusters[i%n:], c.Spec.Clusters[:i%n]...)
		again, err := Render(c, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(stringify(first), stringify(again)); diff != "" {
			t.Fatalf("render %d differs (-first +again):\n%s", i, diff)
		}
	}
}

// TestEveryKustomizationBuilds builds each directory holding a kustomization.yaml the way
// Argo CD does (kustomize defaults: load restrictions to the root) and the way Flux's
// kustomize-controller does (no load restrictions), and checks the objects each cluster
// gets.
func TestEveryKustomizationBuilds(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	fsys := filesys.MakeFsInMemory()
	for p, data := range tree {
		if err := fsys.WriteFile("/repo/"+p, data); err != nil {
			t.Fatal(err)
		}
	}
	modes := map[string]kustypes.LoadRestrictions{
		"argocd": kustypes.LoadRestrictionsRootOnly,
		"flux":   kustypes.LoadRestrictionsNone,
	}
	var dirs []string
	for _, p := range tree.Paths() {
		if path.Base(p) == "kustomization.yaml" {
			dirs = append(dirs, path.Dir(p))
		}
	}
	if len(dirs) < 10 {
		t.Fatalf("only %d kustomizations rendered: %v", len(dirs), dirs)
	}
	for _, dir := range dirs {
		for mode, lr := range modes {
			t.Run(mode+"/"+dir, func(t *testing.T) {
				opts := krusty.MakeDefaultOptions()
				opts.LoadRestrictions = lr
				res, err := krusty.MakeKustomizer(opts).Run(fsys, "/repo/"+dir)
				if err != nil {
					t.Fatalf("kustomize build %s: %v", dir, err)
				}
				if len(res.Resources()) == 0 {
					t.Fatalf("kustomize build %s: no objects", dir)
				}
				if !strings.HasPrefix(dir, "clusters/") {
					return
				}
				cluster := path.Base(dir)
				out, err := res.AsYaml()
				if err != nil {
					t.Fatal(err)
				}
				// The generated config's name carries its hash, and every workload
				// mounts it under that name.
				if n := bytes.Count(out, []byte("name: "+mcnetv1.AgentConfigMap+"-")); n != 5 {
					t.Errorf("clusters/%s: %d references to the generated %s, want 5 (the ConfigMap and four workloads)", cluster, n, mcnetv1.AgentConfigMap)
				}
				for _, want := range []string{
					"kind: Deployment", "name: mcnet-controller", "name: mcnet-dns",
					"kind: DaemonSet", "name: mcnet-gateway", "name: mcnet-route-agent",
					"kind: ClusterRole", "secretName: mcnet-broker-credentials",
					"clusterID: " + cluster, "mcnet.io/cluster: " + cluster,
					"image: ghcr.io/mcnet-io/mcnet:v1.2.3",
					"server: https://hub.example.com:6443", "--config=/etc/mcnet/config.yaml",
					"kind: Fleet", "name: prod",
				} {
					if !bytes.Contains(out, []byte(want)) {
						t.Errorf("clusters/%s build lacks %q", cluster, want)
					}
				}
			})
		}
	}
}

// TestNoSecretMaterial checks that nothing rendered carries key material, and that
// the only Secret is the gateways' liveness key declared without data (the gateways
// fill it in inside the cluster).
func TestNoSecretMaterial(t *testing.T) {
	tree, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := regexp.MustCompile(`(?m)privateKey|PRIVATE KEY|token:|password|client-key-data`)
	secret := regexp.MustCompile(`(?m)^kind: Secret$`)
	placeholder := regexp.MustCompile(`(?m)^  name: mcnet-liveness-key$`)
	data := regexp.MustCompile(`(?m)^(data|stringData|immutable):`)
	for p, content := range tree {
		if m := forbidden.Find(content); m != nil {
			t.Errorf("%s contains %q", p, m)
		}
		for _, doc := range bytes.Split(content, []byte("\n---\n")) {
			if secret.Match(doc) && (!placeholder.Match(doc) || data.Match(doc)) {
				t.Errorf("%s renders a Secret other than the empty liveness key:\n%s", p, doc)
			}
		}
	}
}

// TestBrokerOverlayPerCluster checks that every cluster has its own broker identity and
// that the broker kustomization lists them all.
func TestBrokerOverlayPerCluster(t *testing.T) {
	cs := loadFleet(t)
	tree, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	k := string(tree["broker/kustomization.yaml"])
	for _, c := range cs.Spec.Clusters {
		f := fmt.Sprintf("broker/cluster-%s.yaml", c.Name)
		if _, ok := tree[f]; !ok {
			t.Errorf("%s missing", f)
		}
		if !strings.Contains(k, "cluster-"+c.Name+".yaml") {
			t.Errorf("broker/kustomization.yaml does not list cluster-%s.yaml", c.Name)
		}
		if _, ok := tree["flux/"+c.Name+"/mcnet.yaml"]; !ok {
			t.Errorf("flux/%s/mcnet.yaml missing", c.Name)
		}
		if _, ok := tree["argocd/"+c.Name+"-crds.yaml"]; !ok {
			t.Errorf("argocd/%s-crds.yaml missing", c.Name)
		}
	}
	if _, ok := tree["flux/hub/broker.yaml"]; !ok {
		t.Error("the broker cluster's Flux objects do not apply broker/")
	}
}

// TestRenderDefaultsAndValidates renders a fleet decoded without any preparation: Render
// fills in the defaults itself, so the tree is the one the CLI's loaded fleet gives, and
// it refuses an invalid fleet with the field at fault and no tree.
func TestRenderDefaultsAndValidates(t *testing.T) {
	data, err := os.ReadFile("testdata/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var raw mcnetv1.ClusterSet
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	before := raw.DeepCopy()
	got, err := Render(&raw, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(stringify(want), stringify(got)); diff != "" {
		t.Errorf("render of the undefaulted fleet differs (-loaded +raw):\n%s", diff)
	}
	if diff := cmp.Diff(before, &raw); diff != "" {
		t.Errorf("Render changed its input (-before +after):\n%s", diff)
	}

	raw.Spec.Clusters[1].PodCIDRs = raw.Spec.Clusters[0].PodCIDRs
	tree, err := Render(&raw, testOptions)
	if err == nil || tree != nil {
		t.Fatalf("an overlapping fleet rendered %d files, error %v", len(tree), err)
	}
	if !strings.Contains(err.Error(), "spec.clusters[hub].podCIDRs[0]") || !strings.Contains(err.Error(), "overlaps east podCIDRs") {
		t.Errorf("error does not name the field and the overlap: %v", err)
	}
}

// TestAddingAClusterChangesOnlyItsOwnFiles adds a cluster to the fleet: the other
// clusters' overlays, the shared bases and the broker's policies stay byte for byte the
// same; what changes is the new cluster's own files, the membership table, and the
// lists that name every cluster.
func TestAddingAClusterChangesOnlyItsOwnFiles(t *testing.T) {
	before, err := Render(loadFleet(t), testOptions)
	if err != nil {
		t.Fatal(err)
	}
	cs := loadFleet(t)
	cs.Spec.Clusters = append(cs.Spec.Clusters, mcnetv1.ClusterSpec{Name: "north", PodCIDRs: []string{"10.30.0.0/16"}, ServiceCIDRs: []string{"10.130.0.0/16"}})
	after, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	var changed []string
	for _, p := range after.Paths() {
		if !bytes.Equal(before[p], after[p]) {
			changed = append(changed, p)
		}
	}
	for _, p := range before.Paths() {
		if _, ok := after[p]; !ok {
			changed = append(changed, p+" (removed)")
		}
	}
	own := regexp.MustCompile(`^(clusters/north/|flux/north/|argocd/north(-crds)?\.yaml$|broker/cluster-north\.yaml$)`)
	lists := map[string]bool{
		path.Join(DirFleet, "fleet.yaml"): true, // the table
		"broker/kustomization.yaml":       true, // lists every broker identity
		"argocd/kustomization.yaml":       true, // lists every Application
		"argocd/project.yaml":             true, // lists every destination
		"README.md":                       true, // counts the clusters
	}
	var table bool
	for _, p := range changed {
		switch {
		case own.MatchString(p):
		case lists[p]:
			table = table || p == path.Join(DirFleet, "fleet.yaml")
		default:
			t.Errorf("adding north changed %s", p)
		}
	}
	if !table || !strings.Contains(string(after[path.Join(DirFleet, "fleet.yaml")]), "name: north") {
		t.Error("the membership table does not list north")
	}
}

// TestConfigAndTable checks that the tree holds the membership table once, whatever
// the number of clusters, and that every cluster's config reads back as the components
// read it, naming that cluster and the table.
func TestConfigAndTable(t *testing.T) {
	cs := loadFleet(t)
	tree, err := Render(cs, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for _, p := range tree.Paths() {
		if bytes.Contains(tree[p], []byte("\nkind: Fleet\n")) {
			tables = append(tables, p)
		}
	}
	if !slices.Equal(tables, []string{path.Join(DirFleet, "fleet.yaml")}) {
		t.Errorf("the table is rendered in %v, want once in %s", tables, DirFleet)
	}
	for _, c := range cs.Spec.Clusters {
		ac, err := agentconfig.Parse(tree[path.Join(DirClusters, c.Name, mcnetv1.AgentConfigKey)])
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		if ac.ClusterID != c.Name || ac.Fleet != cs.Name || ac.Cable != c.Cable || ac.CablePort != c.CablePort || !slices.Equal(ac.PodCIDRs, c.PodCIDRs) {
			t.Errorf("%s: config %+v", c.Name, ac)
		}
	}
}
