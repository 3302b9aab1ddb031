# TKEStack add-on successors: developer entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
TOOLS_BIN := $(CURDIR)/.tools/bin
export PATH := $(TOOLS_BIN):$(PATH)
# Tools the tests find through these variables (see crates/addon-common/src/testing.rs).
export KUBECTL ?= $(TOOLS_BIN)/kubectl
export HELM ?= $(TOOLS_BIN)/helm
export PROMTOOL ?= $(TOOLS_BIN)/promtool

# cargo-nextest ships with the development machines; `make tools` installs it elsewhere.
TEST_CMD := $(CARGO) nextest run --no-fail-fast --no-tests=warn
only = -E '$(1)'

.DEFAULT_GOAL := help
.PHONY: help tools run test test-unit test-integration test-e2e generate verify-generated \
        fmt lint bench e2e images charts clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

tools: ## Install the pinned test tools (kubectl, helm, promtool, kubernetes-validate, protoc)
	@hack/install-tools.sh

run: ## Start the embedded sandbox (emulated control plane + controllers) and show the seed examples
	@hack/run.sh

test: tools lint verify-generated test-unit test-integration test-e2e charts ## Install tools, then run every check and test tier
	@echo "make test: all checks and test tiers passed"

test-unit: ## Tier 1: pure logic (lib and bin unit tests, doc tests)
	$(TEST_CMD) --workspace --lib --bins
	$(CARGO) test --workspace --doc

# Every tier builds with --workspace so that features unify the same way and nothing is
# compiled twice; nextest's -E filter picks the tier's tests. Building the integration tests
# also builds every package's binaries into target/debug, where the e2e tests start them.
test-integration: ## Tier 2: integration tests of the crates (controllers against the in-process emulator, tools)
	$(TEST_CMD) --workspace --test '*' $(call only,not package(e2e))

test-e2e: ## Tier 3: the e2e crate (emulated API server, binaries and kubectl over loopback; E2E_KUBECONFIG for a real cluster)
	$(TEST_CMD) --workspace --test '*' $(call only,package(e2e))

e2e: test-e2e ## Alias of test-e2e

generate: ## Regenerate the CRDs in manifests/crds and charts/*/crds from the Rust types
	$(CARGO) run -q -p addon-common --bin crdgen

verify-generated: ## Fail when manifests/ or charts/ CRDs are stale
	$(CARGO) run -q -p addon-common --bin crdgen -- --check

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## cargo fmt --check and clippy -D warnings on every target
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: ## Run the benchmarks (figures go to docs/)
	@hack/bench.sh

charts: ## helm lint + template | kubernetes-validate --strict for every chart
	@hack/check-charts.sh

images: ## Build the container images (needs a Docker/BuildKit engine; none runs on the dev machines)
	@hack/build-images.sh

clean: ## Remove build output and local sandbox state (keeps .tools)
	$(CARGO) clean
	rm -rf .sandbox
