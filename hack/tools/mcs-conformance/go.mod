// Module tools/mcs-conformance pins the Multi-Cluster Services API conformance suite,
// built from the Go module proxy as a test binary (go test -c) by
// hack/build-tools.sh mcs-conformance. Its version follows the MCS CRDs mcnet installs
// (sigs.k8s.io/mcs-api in the root go.mod); see docs/conformance.md.
//
// There is no go.sum yet: the module proxy this project reaches served no version of
// sigs.k8s.io/mcs-api/conformance when this was written (404), so nothing could be
// checksummed. build-tools.sh builds with -mod=mod, which records the sums on the first
// machine that can download the suite; commit the go.sum it leaves.
module mcnet.io/tools/mcs-conformance

go 1.26.0

require (
	sigs.k8s.io/mcs-api v0.5.2
	sigs.k8s.io/mcs-api/conformance v0.5.2
)
