// Package gitops runs the real GitOps machinery that applies a rendered mcnet tree, for
// end-to-end tests: a Git server on loopback (git http-backend), Flux's source-controller
// and kustomize-controller as processes (built by hack/build-tools.sh), their CRDs, and
// Argo CD's CRDs and the way Argo CD builds an Application's path.
//
// The third-party pieces come from the tool modules under hack/tools, at the versions
// pinned there: binaries from bin/, CRDs from the module cache (never copied into the
// repository).
package gitops
