// Package kustomize is mcnet's render engine: from a validated ClusterSet it produces the
// Git tree that Argo CD or Flux applies — shared kustomize bases (embedded here), the
// broker's objects, one overlay per cluster, and the Flux and Argo CD objects that deploy
// them. Rendering is pure and deterministic: the same fleet gives byte-identical files.
package kustomize

import "embed"

// bases holds the component manifests that are the same in every cluster.
//
//go:embed bases
var bases embed.FS
