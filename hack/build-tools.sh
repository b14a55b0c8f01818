#!/usr/bin/env bash
# Builds the pinned third-party binaries the tests and the lab run (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, controller-gen, krew, wireguard-go, Flux's source-controller and
# kustomize-controller, kube-router's NetworkPolicy controller) from the Go module proxy into
# bin/, one directory per version, so a second run is a no-op. Nothing prebuilt is fetched.
#
# usage: hack/build-tools.sh [etcd|kube-apiserver|kube-controller-manager|kube-proxy|kube-scheduler|kubelet|kubectl|controller-gen|krew|wireguard-go|flux-source-controller|flux-kustomize-controller|coredns|kube-router|mcs-conformance|all]...
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# Versions are pinned here and in hack/tools/*/go.mod; keep them in step.
KUBE_VERSION=v1.37.2
ETCD_VERSION=v3.6.8
CONTROLLER_GEN_VERSION=v0.23.0
KREW_VERSION=v0.4.3
WIREGUARD_GO_VERSION=v0.0.0-20260522210424-ecfc5a8d5446
FLUX_VERSION=v1.9.6 # source-controller and kustomize-controller (v1.10 needs Go 1.27)
COREDNS_VERSION=v1.15.0 # a build with the plugins in hack/tools/coredns/main.go
COREDNS_BUILD=$COREDNS_VERSION+k8s.file # bump the suffix when the plugin list changes
KUBE_ROUTER_VERSION=v2.1.0 # the lab's NetworkPolicy engine (iptables and ipsets; this kernel has no nft queue for kube-network-policies)
MCS_CONFORMANCE_VERSION=v0.5.2 # the MCS CRDs' version (sigs.k8s.io/mcs-api in go.mod); docs/conformance.md

kube_bin="$root/bin/k8s/$KUBE_VERSION"
etcd_bin="$root/bin/etcd/$ETCD_VERSION"

log() { printf 'build-tools: %s\n' "$*" >&2; }

build() { # dir out pkg [ldflags]
	local dir=$1 out=$2 pkg=$3 ldflags=${4:-}
	if [[ -x $out ]]; then return 0; fi
	log "building $(basename "$out") (cold builds take minutes)"
	mkdir -p "$(dirname "$out")"
	local start=$SECONDS
	(cd "$root/hack/tools/$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$pkg")
	mv "$out.tmp" "$out"
	log "built $(basename "$out") in $((SECONDS - start))s"
}

# build_suite is build for a Go test binary: the MCS conformance suite ships as a
# package's tests. -mod=mod records go.sum on the first machine that can download it.
build_suite() { # dir out pkg
	local dir=$1 out=$2 pkg=$3
	if [[ -x $out ]]; then return 0; fi
	log "building $(basename "$(dirname "$out")")/$(basename "$out")"
	mkdir -p "$(dirname "$out")"
	local start=$SECONDS
	if ! (cd "$root/hack/tools/$dir" && CGO_ENABLED=0 go test -mod=mod -c -trimpath -o "$out.tmp" "$pkg"); then
		log "could not build $pkg: the Go module proxy must serve sigs.k8s.io/mcs-api/conformance $MCS_CONFORMANCE_VERSION (see docs/conformance.md)"
		return 1
	fi
	mv "$out.tmp" "$out"
	log "built $(basename "$out") in $((SECONDS - start))s"
}

# Binaries built from the module proxy report v0.0.0-master; clients refuse that, so stamp
# the real version in.
kube_ldflags() {
	local v=${KUBE_VERSION#v} minor
	minor=$(cut -d. -f2 <<<"$v")
	printf -- '-X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=%s -X k8s.io/component-base/version.gitTreeState=clean' "$KUBE_VERSION" "$minor"
}

one() {
	case $1 in
	etcd) build etcd "$etcd_bin/etcd" go.etcd.io/etcd/server/v3 ;;
	kube-apiserver | kube-controller-manager | kube-proxy | kube-scheduler | kubelet | kubectl)
		build kubernetes "$kube_bin/$1" "k8s.io/kubernetes/cmd/$1" "$(kube_ldflags)" ;;
	controller-gen) build controller-gen "$root/bin/controller-gen/$CONTROLLER_GEN_VERSION/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen ;;
	wireguard-go) build wireguard-go "$root/bin/wireguard-go/$WIREGUARD_GO_VERSION/wireguard-go" golang.zx2c4.com/wireguard ;;
	krew) build krew "$root/bin/krew/$KREW_VERSION/krew" sigs.k8s.io/krew/cmd/krew ;;
	kube-router) build kube-router "$root/bin/kube-router/$KUBE_ROUTER_VERSION/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router ;;
	coredns) build coredns "$root/bin/coredns/$COREDNS_BUILD/coredns" . ;;
	mcs-conformance) build_suite mcs-conformance "$root/bin/mcs-conformance/$MCS_CONFORMANCE_VERSION/conformance.test" sigs.k8s.io/mcs-api/conformance ;;
	flux-source-controller | flux-kustomize-controller)
		build "$1" "$root/bin/$1/$FLUX_VERSION/${1#flux-}" "github.com/fluxcd/${1#flux-}" ;;
	all) for t in etcd kube-apiserver controller-gen kube-controller-manager kube-proxy kube-scheduler kubelet kubectl krew wireguard-go flux-source-controller flux-kustomize-controller coredns kube-router; do one "$t"; done ;;
	*) log "unknown tool $1"; exit 2 ;;
	esac
}

[[ $# -gt 0 ]] || set -- all
for t in "$@"; do one "$t"; done
