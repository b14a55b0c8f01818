#!/usr/bin/env bash
# Builds the release artifacts into dist/ (`make dist`): kubectl-mcnet_<os>_<arch>.tar.gz for
# linux and darwin on amd64 and arm64, the krew manifest dist/mcnet.yaml with their sha256,
# and the in-cluster components' image as an OCI layout (dist/mcnet-image-oci/) and its tar
# (dist/mcnet-image.tar), for linux/amd64 and linux/arm64 on the same Debian base as
# `make image` (Debian packages cached in bin/debian; the host needs apt-get and dpkg-deb,
# and fetches the package lists of a foreign architecture once). The work is done by
# hack/dist (internal/packaging).
#
# Environment: VERSION, COMMIT (stamped; from git when unset), IMAGE_REPOSITORY (default
# ghcr.io/mcnet-io/mcnet), IMAGE_TAG (default the version), SOURCE_DATE_EPOCH (archive and
# image timestamps; default the Unix epoch). Extra arguments go to hack/dist (e.g.
# --skip-image).
set -euo pipefail
cd "$(dirname "$0")/.."

export VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)}
export COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || true)}
exec go run ./hack/dist "$@"
