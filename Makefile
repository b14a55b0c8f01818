# mcnet — run `make help` for the targets.
SHELL := /usr/bin/env bash
.DEFAULT_GOAL := build

# Tool versions are pinned in hack/build-tools.sh and hack/tools/*/go.mod.
KUBE_VERSION   := v1.37.2
ETCD_VERSION   := v3.6.8
CONTROLLER_GEN := bin/controller-gen/v0.23.0/controller-gen
VERSION        ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
COMMIT         ?= $(shell git rev-parse --short HEAD 2>/dev/null)
LDFLAGS        := -s -w -X github.com/mcnet-io/mcnet/internal/version.Version=$(VERSION) -X github.com/mcnet-io/mcnet/internal/version.Commit=$(COMMIT)
ENVTEST_ASSETS := $(CURDIR)/bin/envtest/$(KUBE_VERSION)
GO_TEST_FLAGS  ?=
# The last revision whose dataplane programmed iptables rule by rule: make bench
# measures its no-op Apply beside the current one (BenchmarkNoOpApply).
BENCH_BASELINE ?= 0caa576f4db98dc08be03172b5c6cc75303258c9
# The MCS conformance suite: its version follows the MCS CRDs (sigs.k8s.io/mcs-api in
# go.mod) and is pinned in hack/build-tools.sh and hack/tools/mcs-conformance/go.mod.
MCS_CONFORMANCE_VERSION := v0.5.2
MCS_CONFORMANCE ?= bin/mcs-conformance/$(MCS_CONFORMANCE_VERSION)/conformance.test
CONFORMANCE_OUT ?= bin/conformance
# Fleet sizes `make scale` measures; fewer for a quick run (SCALE_N=10,100).
SCALE_N ?= 10,100,300,1000
export KUBEBUILDER_ASSETS := $(ENVTEST_ASSETS)

BINARIES := $(notdir $(wildcard cmd/*))
comma    := ,

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build kubectl-mcnet and the in-cluster binaries into bin/.
	@mkdir -p bin
	@for b in $(BINARIES); do CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o bin/$$b ./cmd/$$b || exit 1; done
	@echo "built: $(addprefix bin/,$(BINARIES))"

.PHONY: tools
tools: ## Build the pinned etcd, kube-apiserver, kube-controller-manager, kube-proxy, Flux controllers from the Go module proxy (cached in bin/).
	hack/build-tools.sh etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl controller-gen flux-source-controller flux-kustomize-controller coredns kube-router
	@mkdir -p $(ENVTEST_ASSETS)
	@ln -sf $(CURDIR)/bin/k8s/$(KUBE_VERSION)/kube-apiserver $(ENVTEST_ASSETS)/kube-apiserver
	@ln -sf $(CURDIR)/bin/etcd/$(ETCD_VERSION)/etcd $(ENVTEST_ASSETS)/etcd

$(CONTROLLER_GEN):
	hack/build-tools.sh controller-gen

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate deepcopy code and CRDs from api/.
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=config/crd
	gofmt -w api

.PHONY: verify
verify: generate ## Regenerate and fail if the tree changed (generated files out of date).
	@git diff --exit-code -- api config || { echo "generated files are out of date: run make generate and commit"; exit 1; }

.PHONY: lint
lint: ## gofmt, go vet and the module's consistency checks.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go mod verify

.PHONY: test
test: tools build image ## Run every test: unit, real API servers, network namespaces, and the lab's end-to-end suites on real nodes (root).
	@# The whole output also goes to bin/test.log; on failure the failed tests are
	@# listed again at the end, where a CI log's tail shows them.
	set -o pipefail; go test $(GO_TEST_FLAGS) -count=1 -tags e2e -timeout 85m ./... 2>&1 | tee bin/test.log || \
		{ echo "=== failed (whole output in bin/test.log):"; grep -E -- '^ *--- FAIL|^FAIL|^panic:' bin/test.log; exit 1; }

.PHONY: e2e
e2e: tools build image ## Run only the end-to-end suites in the lab (root).
	go test $(GO_TEST_FLAGS) -count=1 -tags e2e -timeout 85m ./e2e/...

.PHONY: bench
bench: tools build image ## Run the benchmarks (the lab's too: -tags e2e) and print their figures.
	hack/build-tools.sh wireguard-go
	MCNET_BENCH_BASELINE=$(BENCH_BASELINE) go test -tags e2e -run '^$$' -bench . -benchtime 1x -timeout 120m ./...

.PHONY: scale
scale: tools build image ## Measure 1000 clusters on one broker: a real member and broker in the lab, N-1 simulated members (SCALE_N=10,100,300,1000; results, table and plot in bin/scale; docs/scale.md).
	go test -tags e2e,scale -run '^TestScale$$' -count=1 -timeout 60m -v ./e2e/scale/ -args -scale.n=$(SCALE_N) -scale.out=$(CURDIR)/bin/scale

.PHONY: conformance
conformance: ## Run the MCS API conformance suite unmodified: on lab clusters (2, then 3; root), or CONFORMANCE_KUBECONFIG=FILE CONFORMANCE_CONTEXTS=c0,c1[,c2] (docs/conformance.md).
	@[ -x "$(MCS_CONFORMANCE)" ] || hack/build-tools.sh mcs-conformance
	@if [ -z "$(CONFORMANCE_CONTEXTS)" ] || [ -z "$(CONFORMANCE_KUBECONFIG)" ]; then \
		$(MAKE) --no-print-directory tools build image && \
		MCS_CONFORMANCE=$(abspath $(MCS_CONFORMANCE)) MCS_CONFORMANCE_OUT=$(abspath $(CONFORMANCE_OUT)) \
			go test -tags e2e -count=1 -timeout 90m -run '^TestMCSConformance$$' -v ./e2e/; \
	else \
		go run ./hack/mcs-conformance run -suite $(MCS_CONFORMANCE) -kubeconfig $(CONFORMANCE_KUBECONFIG) \
			-contexts $(CONFORMANCE_CONTEXTS) -mcnet-version $(VERSION) \
			-out $(CONFORMANCE_OUT)/$(words $(subst $(comma), ,$(CONFORMANCE_CONTEXTS)))-clusters; \
	fi

.PHONY: demo
demo: build ## Render the bundled example fleet into a new Git repository, fleet-repo/.
	bin/kubectl-mcnet render -f examples/fleet.yaml --out fleet-repo --commit

.PHONY: lab
lab: tools build image ## Bring up a lab of real clusters with the example fleet applied (three clusters); Ctrl-C tears it down (root).
	@# Built, then exec'd, not go run: go run exits 1 on Ctrl-C even when the lab tore
	@# down cleanly and exited 0, and make would report that as an error.
	go build -o bin/mcnet-lab ./e2e/cmd/mcnet-lab
	exec bin/mcnet-lab up

.PHONY: lab-down
lab-down: ## Remove a lab left behind by a killed run.
	go build -o bin/mcnet-lab ./e2e/cmd/mcnet-lab
	exec bin/mcnet-lab down

.PHONY: clean
clean: ## Remove build output (keeps the cached tool builds and Debian packages).
	rm -rf dist fleet-repo bin/images $(addprefix bin/,$(BINARIES))

.PHONY: image
image: ## Build mcnet's images for this machine into bin/images/ (OCI layout + tar each): mcnet.tar (ghcr.io/mcnet-io/mcnet:<version>), nettools.tar (also docker.io/alpine/socat:1.7.4.4, docker.io/nicolaka/netshoot:v0.15), pause.tar (registry.k8s.io/pause:3.6); see docs/images.md.
	VERSION=$(VERSION) COMMIT=$(COMMIT) go run ./hack/image

.PHONY: dist
dist: ## Build release archives, the krew manifest and the components' OCI image into dist/.
	VERSION=$(VERSION) COMMIT=$(COMMIT) hack/dist.sh
