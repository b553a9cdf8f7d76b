# meshreg — `make build` builds bin/meshreg; `make run` builds it and starts
# a registry on 127.0.0.1:5000 (data in ./meshreg-data); `make tools` puts
# crane, oras, helm and CNCF Distribution in .tools/bin; `make test` runs every test. See README.md.

GO        ?= go
BIN       := bin/meshreg
TOOLS_DIR := $(CURDIR)/.tools
TOOLS_BIN := $(TOOLS_DIR)/bin
STAMPS    := $(TOOLS_DIR)/stamps

# Pinned test clients (crane, oras, the OCI conformance suite) and the
# reference registry (CNCF Distribution: the benchmark's baseline and the
# upstream of the mirror tests).
CRANE_VERSION       := v0.22.1
ORAS_VERSION        := v1.3.6
CONFORMANCE_VERSION := v0.0.0-20260831232431-97274622c111
REGISTRY_VERSION    := v3.0.0
HELM_VERSION        := v3.22.0

CRANE_STAMP       := $(STAMPS)/crane-$(CRANE_VERSION)
ORAS_STAMP        := $(STAMPS)/oras-$(ORAS_VERSION)
CONFORMANCE_STAMP := $(STAMPS)/conformance-$(CONFORMANCE_VERSION)
REGISTRY_STAMP    := $(STAMPS)/registry-$(REGISTRY_VERSION)
HELM_STAMP        := $(STAMPS)/helm-$(HELM_VERSION)

# The repository's tools come first in PATH for every recipe; the tests
# find crane, oras, conformance and helm through PATH.
export PATH := $(TOOLS_BIN):$(PATH)

UNIT_TIMEOUT ?= 15m
E2E_TIMEOUT  ?= 30m
# make conformance OCI_VERSION=dev: report the counts without failing.
OCI_VERSION  ?= 1.1
# make bench BENCH_FLAGS='-blob-size 64MiB -layers 5 -layer-size 1MiB -duration 1s -runs 1'
BENCH_FLAGS  ?=
# Then the scale table (idle cost, tag visibility, fan-out as the cluster
# grows: minutes, and most of the machine); make bench SCALE_SIZES= skips it.
SCALE_SIZES  ?= 3,25,50,100

.PHONY: all build run test lint unit e2e conformance bench tools image testnet fuzz clean

all: build

# Build stamps, shown by `meshreg version`, the status document and the
# meshreg_build_info metric: make build VERSION=v1.2.0 overrides the
# version (default: git describe; "dev" outside a git work tree).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE    ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
STAMP   := github.com/meshreg/meshreg/node/buildinfo
LDFLAGS := -X $(STAMP).version=$(VERSION) -X $(STAMP).commit=$(COMMIT) -X $(STAMP).date=$(DATE)

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/meshreg

# The built binary replaces the recipe's shell (exec), so Ctrl-C reaches
# meshreg, which stops gracefully, and make reports meshreg's own exit
# status (go run exits 1 on SIGINT, and make then printed "Error 1").
# make run ARGS='--listen 0.0.0.0:5000' passes flags to serve.
ARGS ?=
run: build
	exec ./$(BIN) serve $(ARGS)

# Every container scenario (testnet/scenarios): builds the node image, runs
# each scenario on a Docker network of its own, prints each report and
# writes it (JSON and Markdown) under testnet-out/. make test runs smoke,
# failover, hostile and upgrade (testnet/scenario's tests).
testnet:
	$(GO) run ./testnet/cmd/testnet run -out testnet-out testnet/scenarios/*.toml

# Every fuzz target (testnet/fuzz/targets.txt) for FUZZTIME each, one after
# another; logs under fuzz-out/, crashers in <package>/testdata/fuzz/.
# make test runs only the seed corpora (as plain tests), never fuzzes.
FUZZTIME ?= 60s
fuzz:
	GO=$(GO) FUZZTIME=$(FUZZTIME) sh testnet/fuzz/run.sh

# The node image (deploy/Dockerfile): FROM scratch with a static binary,
# built with the classic builder from a context of its own, so it needs no
# base image and no registry. Tagged $(IMAGE) and meshreg:$(VERSION).
IMAGE ?= meshreg:dev
image:
	rm -rf .image && mkdir -p .image/data
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o .image/meshreg ./cmd/meshreg
	DOCKER_BUILDKIT=0 docker build -f deploy/Dockerfile \
		--build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
		-t $(IMAGE) -t meshreg:$(VERSION) .image
	rm -rf .image

lint:
	@files="$$(gofmt -l .)"; if [ -n "$$files" ]; then echo "gofmt -l: these files need gofmt:"; echo "$$files"; exit 1; fi
	$(GO) vet ./...

# lint, unit tests (every package but testnet), then the end-to-end tests.
test: lint unit e2e

# helm: deploy/helm's test lints and renders the chart with it; registry:
# the upstream registry of node/upstream's tests.
unit: $(HELM_STAMP) $(REGISTRY_STAMP)
	$(GO) test -count=1 -timeout $(UNIT_TIMEOUT) $$($(GO) list ./... | grep -v '/testnet')

# The end-to-end tests start bin/meshreg as real processes and drive them
# with the conformance suite, crane, oras and the Docker engine. With
# MESHREG_E2E_REGISTRY=host:port they talk to that registry instead (and
# skip the tests that kill and restart a node); nothing is built then.
E2E_BUILD := $(if $(MESHREG_E2E_REGISTRY),,build)

# -p 1: one package at a time. The process tests (testnet) and the
# container scenarios (testnet/scenario) each load the machine's CPUs; run
# together on two cores, a Raft leader starved of CPU misses its lease now
# and then and a test sees an election it did not cause.
# make e2e E2E_PKGS=./testnet E2E_RUN='^TestTokensAcrossTheCluster$$' runs
# a part of them (.ci/run reruns a failed test so).
E2E_PKGS ?= ./testnet/...
E2E_RUN  ?=
e2e: $(E2E_BUILD) tools
	MESHREG_E2E_BIN=$(CURDIR)/$(BIN) $(GO) test -p 1 -count=1 -timeout $(E2E_TIMEOUT) -v $(if $(E2E_RUN),-run '$(E2E_RUN)') $(E2E_PKGS)

conformance: $(E2E_BUILD) $(CONFORMANCE_STAMP)
	MESHREG_E2E_BIN=$(CURDIR)/$(BIN) MESHREG_E2E_OCI_VERSION=$(OCI_VERSION) \
		$(GO) test -count=1 -timeout 15m -run '^TestConformance$$' -v ./testnet

bench: build $(REGISTRY_STAMP)
	$(GO) run ./testnet/bench -meshreg $(BIN) -distribution .tools/bin/registry $(BENCH_FLAGS)
	$(if $(SCALE_SIZES),$(GO) run ./testnet/bench -meshreg $(BIN) -distribution .tools/bin/registry -scale -scale-sizes $(SCALE_SIZES) -scale-image-size 64MiB)

tools: $(CRANE_STAMP) $(ORAS_STAMP) $(CONFORMANCE_STAMP) $(HELM_STAMP) $(REGISTRY_STAMP)

# go install MODULE@VERSION ignores this module's go.mod; GOFLAGS is cleared
# so that a -mod setting in the environment cannot break it.
$(CRANE_STAMP):
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)
	@mkdir -p $(@D) && touch $@

$(ORAS_STAMP):
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	@mkdir -p $(@D) && touch $@

$(CONFORMANCE_STAMP):
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install github.com/opencontainers/distribution-spec/conformance@$(CONFORMANCE_VERSION)
	@mkdir -p $(@D) && touch $@

$(REGISTRY_STAMP):
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(REGISTRY_VERSION)
	@mkdir -p $(@D) && touch $@

$(HELM_STAMP):
	GOFLAGS= GOBIN=$(TOOLS_BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	@mkdir -p $(@D) && touch $@

clean:
	rm -rf bin
