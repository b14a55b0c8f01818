package kustomize

import (
	"fmt"
	"path"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
)

// Names of the GitOps controllers' objects. The Flux source defaults to the
// flux-system GitRepository that `flux bootstrap` makes, so a bootstrapped cluster
// needs nothing else; the placeholder URL is deliberately unresolvable, so a
// render without a repository cannot sync from the wrong one.
const (
	fluxNamespace   = "flux-system"
	argoNamespace   = "argocd"
	argoProject     = "mcnet"
	fluxSourceOwn   = "mcnet"
	fluxSourceBoot  = "flux-system"
	syncWaveKey     = "argocd.argoproj.io/sync-wave"
	placeholderRepo = "https://git.example.com/CHANGE-ME/fleet.git"
)

// repoPath is a directory of the rendered tree as the GitOps controllers see it: relative
// to the repository's root.
func repoPath(cs *mcnetv1.ClusterSet, dir string) string {
	return "./" + path.Join(cs.Spec.GitOps.Path, dir)
}

// repoURL is the URL Argo CD syncs from: the fleet's, else the one the CLI
// found (flag or origin), else the placeholder.
func repoURL(cs *mcnetv1.ClusterSet, opts Options) string {
	switch {
	case cs.Spec.GitOps.RepoURL != "":
		return cs.Spec.GitOps.RepoURL
	case opts.RepoURL != "":
		return opts.RepoURL
	}
	return placeholderRepo
}

// UsesPlaceholderRepo reports whether the Argo CD objects of a render point at a
// placeholder URL because neither the fleet nor the output directory named a repository.
func UsesPlaceholderRepo(cs *mcnetv1.ClusterSet, opts Options) bool {
	return repoURL(cs, opts) == placeholderRepo
}

// renderFlux writes flux/NAME for each cluster: Kustomizations for the CRDs,
// then the cluster's overlay (and the broker on the broker's cluster), ordered
// by dependsOn so no custom resource is applied before its CRD exists.
func renderFlux(t Tree, cs *mcnetv1.ClusterSet, clusters []mcnetv1.ClusterSpec, opts Options) error {
	// A fleet that names its repository gets a GitRepository of its own;
	// otherwise the Kustomizations use the bootstrap source.
	source := map[string]any{"kind": "GitRepository", "name": fluxSourceBoot}
	var sourceObj map[string]any
	if url := cs.Spec.GitOps.RepoURL; url != "" {
		source["name"] = fluxSourceOwn
		sourceObj = map[string]any{
			"apiVersion": "source.toolkit.fluxcd.io/v1",
			"kind":       "GitRepository",
			"metadata":   map[string]any{"name": fluxSourceOwn, "namespace": fluxNamespace},
			// The repository is polled every minute: a pushed render reaches
			// the clusters within that, without a webhook.
			"spec": map[string]any{
				"interval": "1m",
				"url":      url,
				"ref":      map[string]string{"branch": cs.Spec.GitOps.Revision},
			},
		}
	}
	// fluxKustomization applies dir with pruning (a cluster removed from the
	// fleet loses its objects). With health checks it is Ready only once the
	// named workloads are; without, once every applied object is (wait).
	fluxKustomization := func(name, dir string, dependsOn []string, health []any) map[string]any {
		// Flux re-applies every 10 minutes, which repairs drift; a failed
		// apply is retried every 30 s, and one that takes over 5 minutes fails.
		spec := map[string]any{
			"interval":      "10m",
			"retryInterval": "30s",
			"timeout":       "5m",
			"path":          repoPath(cs, dir),
			"prune":         true,
			"sourceRef":     source,
		}
		if len(dependsOn) > 0 {
			deps := make([]any, len(dependsOn))
			for i, d := range dependsOn {
				deps[i] = map[string]string{"name": d}
			}
			spec["dependsOn"] = deps
		}
		if health != nil {
			spec["healthChecks"] = health
		} else {
			spec["wait"] = true
		}
		return map[string]any{
			"apiVersion": "kustomize.toolkit.fluxcd.io/v1",
			"kind":       "Kustomization",
			"metadata":   map[string]any{"name": name, "namespace": fluxNamespace},
			"spec":       spec,
		}
	}
	// workload is a health-check reference to one of mcnet's workloads.
	workload := func(kind, name string) map[string]any {
		return map[string]any{"apiVersion": "apps/v1", "kind": kind, "name": name, "namespace": mcnetv1.SystemNamespace}
	}
	// The components whose readiness means mcnet is up; Flux reports the
	// overlay unhealthy, and stops there, while any of them is not.
	health := []any{
		workload("Deployment", "mcnet-controller"),
		workload("Deployment", "mcnet-dns"),
		workload("DaemonSet", "mcnet-gateway"),
		workload("DaemonSet", "mcnet-route-agent"),
	}
	for _, c := range clusters {
		dir := path.Join(DirFlux, c.Name)
		var resources []string
		if sourceObj != nil {
			resources = append(resources, "source.yaml")
			if err := t.putYAML(path.Join(dir, "source.yaml"), "", sourceObj); err != nil {
				return err
			}
		}
		resources = append(resources, "crds.yaml", "mcnet.yaml")
		if err := t.putYAML(path.Join(dir, "crds.yaml"), "# CRDs first: everything else depends on this Kustomization.\n",
			fluxKustomization("mcnet-crds", DirCRDs, nil, nil)); err != nil {
			return err
		}
		if err := t.putYAML(path.Join(dir, "mcnet.yaml"), "",
			fluxKustomization("mcnet", path.Join(DirClusters, c.Name), []string{"mcnet-crds"}, health)); err != nil {
			return err
		}
		// The broker is applied by the broker cluster's Flux only, after the
		// CRDs (its objects are mcnet kinds) but not after the components.
		if c.Name == cs.Spec.Broker.Cluster {
			resources = append(resources, "broker.yaml")
			if err := t.putYAML(path.Join(dir, "broker.yaml"), "# This cluster hosts the broker.\n",
				fluxKustomization("mcnet-broker", DirBroker, []string{"mcnet-crds"}, nil)); err != nil {
				return err
			}
		}
		if err := t.putYAML(path.Join(dir, "kustomization.yaml"),
			fmt.Sprintf("# Flux objects for cluster %s: point that cluster's Flux at this directory\n# (e.g. flux create kustomization mcnet-fleet --path=%s).\n", c.Name, repoPath(cs, dir)),
			kustomization(map[string]any{"resources": resources})); err != nil {
			return err
		}
	}
	return nil
}

// renderArgoCD writes argocd/: an AppProject limited to the fleet's repository
// and clusters, and per cluster an Application for the CRDs (sync wave -1) and
// one for the overlay (wave 0), plus the broker's. The directory is an app of
// apps: one Application pointed at it brings in the rest.
func renderArgoCD(t Tree, cs *mcnetv1.ClusterSet, clusters []mcnetv1.ClusterSpec, opts Options) error {
	url := repoURL(cs, opts)
	// destination targets cluster c by its API server URL when the fleet gives
	// one, else by its Argo CD name; ns "" leaves the namespace to the objects
	// (the CRDs are cluster-scoped).
	destination := func(c mcnetv1.ClusterSpec, ns string) map[string]string {
		d := map[string]string{"namespace": ns}
		if c.Server != "" {
			d["server"] = c.Server
		} else {
			// The name of the cluster as registered in Argo CD (argocd cluster add).
			d["name"] = c.Name
		}
		return d
	}
	// app syncs dir to dest automatically, pruning and self-healing, with
	// server-side apply (as Flux applies, so the two tools own the same fields
	// the same way and no last-applied annotation is kept) and bounded retries.
	app := func(name, wave, dir string, dest map[string]string) map[string]any {
		return map[string]any{
			"apiVersion": "argoproj.io/v1alpha1",
			"kind":       "Application",
			"metadata": map[string]any{
				"name":        name,
				"namespace":   argoNamespace,
				"annotations": map[string]string{syncWaveKey: wave},
				// Deleting an Application deletes what it applied, as
				// pruning does for a cluster taken out of the fleet.
				"finalizers": []string{"resources-finalizer.argocd.argoproj.io"},
			},
			"spec": map[string]any{
				"project": argoProject,
				"source": map[string]any{
					"repoURL":        url,
					"targetRevision": cs.Spec.GitOps.Revision,
					"path":           path.Join(cs.Spec.GitOps.Path, dir),
				},
				"destination": dest,
				"syncPolicy": map[string]any{
					"automated":   map[string]bool{"prune": true, "selfHeal": true},
					"syncOptions": []string{"ServerSideApply=true"},
					"retry":       map[string]any{"limit": 5, "backoff": map[string]any{"duration": "10s", "factor": 2, "maxDuration": "3m"}},
				},
			},
		}
	}
	// The project may deploy to the fleet's clusters only (any namespace), so
	// an edited Application cannot aim the repository at another cluster.
	var destinations []any
	resources := []string{"project.yaml"}
	var broker mcnetv1.ClusterSpec
	for _, c := range clusters {
		destinations = append(destinations, destination(c, "*"))
		if c.Name == cs.Spec.Broker.Cluster {
			broker = c
		}
		crds, main := c.Name+"-crds.yaml", c.Name+".yaml"
		resources = append(resources, crds, main)
		if err := t.putYAML(path.Join(DirArgoCD, crds), "# Sync wave -1: CRDs before the components that use them.\n",
			app("mcnet-crds-"+c.Name, "-1", DirCRDs, destination(c, ""))); err != nil {
			return err
		}
		if err := t.putYAML(path.Join(DirArgoCD, main), "",
			app("mcnet-"+c.Name, "0", path.Join(DirClusters, c.Name), destination(c, mcnetv1.SystemNamespace))); err != nil {
			return err
		}
	}
	// The broker namespace lives on the broker's cluster; validation has made
	// sure that cluster is in the fleet, so broker is set here.
	resources = append(resources, "broker.yaml")
	if err := t.putYAML(path.Join(DirArgoCD, "broker.yaml"), "",
		app("mcnet-broker", "0", DirBroker, destination(broker, cs.Spec.Broker.Namespace))); err != nil {
		return err
	}
	// Wave -2: the project exists before any Application that names it.
	project := map[string]any{
		"apiVersion": "argoproj.io/v1alpha1",
		"kind":       "AppProject",
		"metadata":   map[string]any{"name": argoProject, "namespace": argoNamespace, "annotations": map[string]string{syncWaveKey: "-2"}},
		"spec": map[string]any{
			"description":                "mcnet multi-cluster networking for fleet " + cs.Name,
			"sourceRepos":                []string{url},
			"destinations":               destinations,
			"clusterResourceWhitelist":   []any{map[string]string{"group": "*", "kind": "*"}},
			"namespaceResourceWhitelist": []any{map[string]string{"group": "*", "kind": "*"}},
		},
	}
	if err := t.putYAML(path.Join(DirArgoCD, "project.yaml"), "", project); err != nil {
		return err
	}
	return t.putYAML(path.Join(DirArgoCD, "kustomization.yaml"),
		"# App of apps for Argo CD: apply this directory (or point an Application at it) in the\n# Argo CD namespace; sync waves put the project first, then CRDs, then the components.\n",
		kustomization(map[string]any{"resources": resources}))
}

// readme explains the tree to whoever opens the repository, and says where the
// one thing it cannot hold, the broker credentials, comes from.
func readme(cs *mcnetv1.ClusterSet, clusters []mcnetv1.ClusterSpec) []byte {
	s := fmt.Sprintf(`<!-- Generated by kubectl mcnet render; edit the fleet file and render again. -->
# mcnet fleet %q

Rendered from a ClusterSet with %d clusters; broker on %q (namespace %q).

| directory | what it holds | applied to |
|---|---|---|
| bases/crds | mcnet and Multi-Cluster Services CRDs | every cluster, first |
| bases/mcnet | controller, gateway and route agent, shared by all clusters | (through clusters/*) |
| bases/fleet | the membership table (kind Fleet): every cluster's networks, trusted over the broker | (through clusters/*) |
| clusters/NAME | one cluster's overlay: its config (identity, networks, cable, broker), image | that cluster |
| broker | the broker namespace, one identity per cluster, one-writer policy | the broker cluster |
| flux/NAME | Flux Kustomizations for that cluster (CRDs first via dependsOn) | that cluster's Flux |
| argocd | Argo CD AppProject and Applications (sync waves put CRDs first) | Argo CD |

No secret is kept here. Each cluster needs the Secret mcnet-system/mcnet-broker-credentials,
made with: kubectl mcnet broker credentials --cluster NAME (then seal or encrypt it).
`, cs.Name, len(clusters), cs.Spec.Broker.Cluster, cs.Spec.Broker.Namespace)
	return []byte(s)
}
