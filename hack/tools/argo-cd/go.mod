// Module tools/argo-cd pins the Argo CD release whose CRDs (manifests/crds in the module)
// the Argo CD test installs. Nothing is built from it: Argo CD itself does not run here.
// v3.5.7 is the newest release that builds with Go 1.26 (v3.6 needs Go 1.27).
module mcnet.io/tools/argo-cd

go 1.26.0

require github.com/argoproj/argo-cd/v3 v3.5.7
