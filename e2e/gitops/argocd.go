package gitops

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// ArgoCD is the pinned Argo CD release (hack/tools/argo-cd).
type ArgoCD struct {
	Version string
	// CRDs is Application, ApplicationSet and AppProject as one YAML stream, from the
	// module's manifests/crds.
	CRDs []byte
}

// LoadArgoCD reads the CRDs of the Argo CD release pinned by hack/tools/argo-cd from the
// module cache (downloading the module if needed).
func LoadArgoCD(ctx context.Context, repoRoot string) (*ArgoCD, error) {
	m, err := PinnedModule(ctx, repoRoot, "argo-cd", "github.com/argoproj/argo-cd/v3")
	if err != nil {
		return nil, err
	}
	crds, err := ReadYAMLDir(filepath.Join(m.Dir, "manifests", "crds"))
	if err != nil {
		return nil, err
	}
	return &ArgoCD{Version: m.Version, CRDs: crds}, nil
}

// Argo CD's annotations and the field manager of its server-side applies.
const (
	ArgoSyncWave     = "argocd.argoproj.io/sync-wave"
	ArgoTrackingID   = "argocd.argoproj.io/tracking-id"
	ArgoFieldManager = "argocd-controller"
)

// BuildArgoCDSource builds an Application's source path in a checkout of its repository
// the way Argo CD's repo-server does for a kustomize source without kustomize options:
// `kustomize build PATH` with kustomize's defaults (load restrictions RootOnly, no
// plugins, no Helm). Objects are tracked the way Argo CD v3 tracks them by default, with
// the tracking-id annotation naming the Application.
func BuildArgoCDSource(checkout, path, app string) ([]*unstructured.Unstructured, error) {
	dir := filepath.Join(checkout, filepath.FromSlash(path))
	if rel, err := filepath.Rel(checkout, dir); err != nil || strings.HasPrefix(rel, "..") {
		return nil, fmt.Errorf("application %s: path %q leaves the repository", app, path)
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("application %s: kustomize build %s: %w", app, path, err)
	}
	var out []*unstructured.Unstructured
	for _, r := range res.Resources() {
		m, err := r.Map()
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{Object: m}
		out = append(out, u)
	}
	return out, nil
}

// Track sets Argo CD's tracking annotation on an object the Application app manages, as
// the application controller does before applying it (namespace must be final).
func Track(app string, u *unstructured.Unstructured) {
	gvk := u.GroupVersionKind()
	a := u.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[ArgoTrackingID] = fmt.Sprintf("%s:%s/%s:%s/%s", app, gvk.Group, gvk.Kind, u.GetNamespace(), u.GetName())
	u.SetAnnotations(a)
}
