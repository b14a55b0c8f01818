package diagnose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/fleet"
	"github.com/mcnet-io/mcnet/kustomize"
)

// FleetFile checks a fleet file: it loads and validates, and no CIDRs overlap. It
// returns the fleet when it is usable.
func FleetFile(p string) (*mcnetv1.ClusterSet, []Check) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, []Check{fail("MCN1801", "", "fleet file is valid", "%v", err)}
	}
	cs, err := fleet.Parse(data)
	var verr *fleet.ValidationError
	if errors.As(err, &verr) {
		// Overlaps get their own code; re-decode leniently to name them.
		var raw mcnetv1.ClusterSet
		if yaml.Unmarshal(data, &raw) == nil {
			var nets []Network
			for _, c := range raw.Spec.Clusters {
				nets = append(nets, Network{Cluster: c.Name, PodCIDRs: c.PodCIDRs, ServiceCIDRs: c.ServiceCIDRs})
			}
			out := Overlaps(nets)
			var rest []string
			for _, fe := range verr.Errors {
				if !strings.Contains(fe.Error(), "overlaps") {
					rest = append(rest, fe.Error())
				}
			}
			if len(rest) > 0 {
				out = append(out, fail("MCN1801", "", "fleet file is valid", "%s: %s", p, strings.Join(rest, "; ")))
			}
			return nil, out
		}
	}
	if err != nil {
		return nil, []Check{fail("MCN1801", "", "fleet file is valid", "%s: %v", p, err)}
	}
	var nets []Network
	remapped := mcnetv1.RemappedClusters(cs) // a valid fleet remaps every overlapping cluster
	for _, c := range cs.Spec.Clusters {
		nets = append(nets, Network{c.Name, c.PodCIDRs, c.ServiceCIDRs, remapped[c.Name]})
	}
	return cs, append([]Check{ok("gitops", "", "fleet file is valid ("+cs.Name+")")}, Overlaps(nets)...)
}

// Tree is a rendered tree on disk with its kustomizations built.
type Tree struct {
	Dir string
	// Files are the paths the render index lists.
	Files []string
	// Built holds each kustomization directory's objects.
	Built map[string][]*unstructured.Unstructured
}

// RenderedTree checks that dir is a rendered tree and that every kustomization in it
// builds as Flux and Argo CD would build it.
func RenderedTree(dir string) (*Tree, []Check) {
	idx, err := os.ReadFile(filepath.Join(dir, kustomize.IndexFile))
	if err != nil {
		return nil, []Check{fail("MCN1806", "", "--repo is a rendered tree", "%v", err)}
	}
	t := &Tree{Dir: dir, Built: map[string][]*unstructured.Unstructured{}}
	dirs := map[string]bool{}
	for _, line := range strings.Split(string(idx), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		t.Files = append(t.Files, line)
		if path.Base(line) == "kustomization.yaml" {
			dirs[path.Dir(line)] = true
		}
	}
	out := []Check{ok("gitops", "", fmt.Sprintf("--repo is a rendered tree (%d files)", len(t.Files)))}
	sorted := make([]string, 0, len(dirs))
	for d := range dirs {
		sorted = append(sorted, d)
	}
	slices.Sort(sorted)
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	fs := filesys.MakeFsOnDisk()
	var broken []string
	for _, d := range sorted {
		res, err := k.Run(fs, filepath.Join(dir, filepath.FromSlash(d)))
		if err != nil {
			broken = append(broken, d)
			out = append(out, fail("MCN1802", "", "kustomization "+d+" builds", "%v", err))
			continue
		}
		for _, r := range res.Resources() {
			m, err := r.Map()
			if err != nil {
				continue
			}
			t.Built[d] = append(t.Built[d], &unstructured.Unstructured{Object: m})
		}
	}
	if len(broken) == 0 {
		out = append(out, ok("gitops", "", fmt.Sprintf("every kustomization builds (%d)", len(sorted))))
	}
	return t, out
}

// UpToDate checks the tree against what the fleet renders now.
func UpToDate(cs *mcnetv1.ClusterSet, t *Tree, opts kustomize.Options) []Check {
	if opts.Kept == nil {
		// The tree's own table holds the global ranges already allocated.
		opts.Kept, _ = kustomize.ReadKept(t.Dir, cs.Name)
	}
	want, err := kustomize.Render(cs, opts)
	if err != nil {
		return []Check{fail("MCN1803", "", "rendered tree matches the fleet", "render: %v", err)}
	}
	var differ []string
	for _, p := range want.Paths() {
		have, err := os.ReadFile(filepath.Join(t.Dir, filepath.FromSlash(p)))
		if err != nil || !bytes.Equal(have, want[p]) {
			differ = append(differ, p)
		}
	}
	if len(differ) > 0 {
		if len(differ) > 5 {
			differ = append(differ[:5], fmt.Sprintf("and %d more", len(differ)-5))
		}
		return []Check{fail("MCN1803", "", "rendered tree matches the fleet", "files differ: %s", strings.Join(differ, ", "))}
	}
	return []Check{ok("gitops", "", "rendered tree matches the fleet")}
}

// Drift compares what the tree renders for cluster (its overlay and the CRDs) with
// the live objects: every field Git sets must have the same value live.
func Drift(ctx context.Context, c client.Client, cluster string, t *Tree) []Check {
	dirs := []string{kustomize.DirCRDs, path.Join(kustomize.DirClusters, cluster)}
	if _, ok := t.Built[dirs[1]]; !ok {
		return []Check{skip("gitops", cluster, "live objects match Git", "the tree has no "+dirs[1])}
	}
	var drifted, missing []string
	n := 0
	for _, d := range dirs {
		for _, want := range t.Built[d] {
			n++
			live := &unstructured.Unstructured{}
			live.SetGroupVersionKind(want.GroupVersionKind())
			err := c.Get(ctx, client.ObjectKey{Namespace: want.GetNamespace(), Name: want.GetName()}, live)
			who := fmt.Sprintf("%s %s", want.GetKind(), strings.TrimPrefix(want.GetNamespace()+"/"+want.GetName(), "/"))
			if err != nil {
				if client.IgnoreNotFound(err) == nil {
					missing = append(missing, who)
				}
				continue
			}
			if diffs := Subset(normalise(want.Object), normalise(live.Object), ""); len(diffs) > 0 {
				if len(diffs) > 3 {
					diffs = append(diffs[:3], "…")
				}
				drifted = append(drifted, who+" ("+strings.Join(diffs, ", ")+")")
			}
		}
	}
	var out []Check
	if len(drifted) > 0 {
		out = append(out, fail("MCN1804", cluster, "live objects match Git", "%s", strings.Join(drifted, "; ")))
	} else {
		out = append(out, ok("gitops", cluster, fmt.Sprintf("live objects match Git (%d objects)", n)))
	}
	if len(missing) > 0 {
		out = append(out, fail("MCN1805", cluster, "every rendered object exists", "%s", strings.Join(missing, ", ")))
	}
	return out
}

// normalise round-trips through JSON so numbers and maps compare alike.
func normalise(o map[string]any) any {
	data, err := json.Marshal(o)
	if err != nil {
		return o
	}
	var v any
	_ = json.Unmarshal(data, &v)
	return v
}

// Subset returns the paths where want sets something live does not have equally.
// Fields the API server adds (defaults, status) do not count.
func Subset(want, live any, at string) []string {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return []string{orRoot(at)}
		}
		var out []string
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			if at == "" && k == "status" {
				continue
			}
			if at == ".metadata" && (k == "creationTimestamp" || k == "annotations") {
				continue
			}
			out = append(out, Subset(w[k], l[k], at+"."+k)...)
		}
		return out
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(w) {
			return []string{orRoot(at)}
		}
		var out []string
		for i := range w {
			out = append(out, Subset(w[i], l[i], fmt.Sprintf("%s[%d]", at, i))...)
		}
		return out
	case nil:
		return nil
	}
	if !reflect.DeepEqual(want, live) {
		return []string{orRoot(at)}
	}
	return nil
}

func orRoot(p string) string {
	if p == "" {
		return "."
	}
	return p
}
