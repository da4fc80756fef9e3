# totpgate developer tasks. `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

GO_FILES = $(shell git ls-files '*.go')
NPM_DIR := .tools/npm
REDOCLY := $(NPM_DIR)/node_modules/.bin/redocly
# A real Vault dev server for the tests, built from Go modules in its own
# module (test/vault) so Vault's dependencies stay out of go.mod.
VAULT := bin/vault
HELM := .tools/bin/helm
# staticcheck, the linter made for Go, installed project-locally like helm.
STATICCHECK := .tools/bin/staticcheck
# A real Kubernetes API server and its etcd for the chart and Vault
# Kubernetes-auth tests, built from Go modules in their own module (test/k8s)
# so Kubernetes' dependencies stay out of go.mod. No kubelet: pods never run.
KUBE_APISERVER := bin/kube-apiserver
ETCD := bin/etcd
KUBE_VERSION := v1.37.2
# helm checks the chart's kubeVersion against what the server reports, and an
# unstamped build reports v0.0.0-master.
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
# Vault's Kubernetes auth as an external plugin (the Vault build is -tags
# minimal, without it), in the version Vault 1.19.5 pins.
VAULT_PLUGIN_DIR := bin/vault-plugins
VAULT_K8S_AUTH := $(VAULT_PLUGIN_DIR)/vault-plugin-auth-kubernetes
TS_DEPS := examples/typescript/node_modules/.package-lock.json
# Real web apps (test/apps) the differential tests put behind totpgate.
EXPRESS_DEPS := test/apps/express/node_modules/.package-lock.json

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-16s %s\n", $$1, $$2}'

.PHONY: demo
demo: ## See it work: a demo app behind the sidecar on 127.0.0.1:8080, embedded defaults.
	go run ./cmd/totpgate demo

.PHONY: run
run: ## Run the sidecar with embedded defaults in front of http://127.0.0.1:3000.
	go run ./cmd/totpgate serve --upstream http://127.0.0.1:3000

.PHONY: test-deps
test-deps: ## Install the outside tools the tests use (Debian packages: oathtool, zbar-tools, chromium), if missing.
	@command -v oathtool >/dev/null && command -v zbarimg >/dev/null && command -v chromium >/dev/null || { echo "installing oathtool, zbar-tools and chromium (TOTP, QR and browser tests)"; apt-get update -qq && apt-get install -y -qq oathtool zbar-tools chromium >/dev/null; }

# test/promrules is a module of its own (Prometheus's dependencies stay out
# of go.mod), so ./... does not reach it: test runs it after the rest.
.PHONY: test
test: test-deps app-deps $(REDOCLY) $(VAULT) $(VAULT_K8S_AUTH) $(KUBE_APISERVER) $(ETCD) $(HELM) $(TS_DEPS) ## Run every test (race detector, shuffled) against real Vault, a real Kubernetes API server, SQLite, PostgreSQL, helm and the Express and Django upstream apps, then the alert rules against Prometheus (test/promrules).
	TOTPGATE_VAULT_BIN=$(abspath $(VAULT)) TOTPGATE_VAULT_PLUGIN_DIR=$(abspath $(VAULT_PLUGIN_DIR)) TOTPGATE_KUBE_APISERVER=$(abspath $(KUBE_APISERVER)) TOTPGATE_ETCD=$(abspath $(ETCD)) TOTPGATE_HELM=$(abspath $(HELM)) go test -race -shuffle=on -count=1 -timeout 45m ./...
	cd test/promrules && go test -race -shuffle=on -count=1 -timeout 20m ./...

$(HELM):
	@echo "installing helm v3.19.0 into .tools/bin (first build takes minutes, then cached)"
	GOBIN=$(abspath .tools/bin) go install helm.sh/helm/v3/cmd/helm@v3.19.0

$(TS_DEPS): examples/typescript/package.json examples/typescript/package-lock.json
	npm ci --prefix examples/typescript --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: app-deps
app-deps: $(EXPRESS_DEPS) ## Install what the upstream test apps need: Debian's python3-django (if missing) and test/apps/express's pinned npm packages.
	@/usr/bin/python3 -c 'import django' 2>/dev/null || { echo "installing python3-django (the Django upstream test app)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-django >/dev/null; }

$(EXPRESS_DEPS): test/apps/express/package.json test/apps/express/package-lock.json
	npm ci --prefix test/apps/express --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: ts-deps
ts-deps: $(TS_DEPS) ## Install the TypeScript example's pinned npm packages (openapi-typescript, openapi-fetch, otplib, tsc).

.PHONY: helm
helm: $(HELM) ## Install helm v3.19.0 into .tools/bin for the chart tests.

$(VAULT): test/vault/go.mod test/vault/go.sum test/vault/main.go
	@echo "building the Vault dev server for the tests (first build takes minutes, then cached)"
	cd test/vault && go build -mod=mod -tags minimal -trimpath -o $(abspath $(VAULT)) .

.PHONY: vault
vault: $(VAULT) ## Build the Vault dev server the tests use (bin/vault).

$(VAULT_K8S_AUTH): test/k8s/vaultplugin/go.mod test/k8s/vaultplugin/go.sum
	@echo "building Vault's Kubernetes auth plugin for the tests (first build takes minutes, then cached)"
	cd test/k8s/vaultplugin && go build -trimpath -o $(abspath $@) github.com/hashicorp/vault-plugin-auth-kubernetes/cmd/vault-plugin-auth-kubernetes

$(KUBE_APISERVER): test/k8s/go.mod test/k8s/go.sum
	@echo "building kube-apiserver $(KUBE_VERSION) for the tests (first build takes minutes, then cached)"
	cd test/k8s && go build -trimpath -ldflags '$(KUBE_LDFLAGS)' -o $(abspath $@) k8s.io/kubernetes/cmd/kube-apiserver

$(ETCD): test/k8s/go.mod test/k8s/go.sum
	@echo "building etcd for the tests (first build takes minutes, then cached)"
	cd test/k8s && go build -trimpath -o $(abspath $@) go.etcd.io/etcd/server/v3

.PHONY: k8s
k8s: $(KUBE_APISERVER) $(ETCD) $(VAULT_K8S_AUTH) ## Build the Kubernetes API server, etcd and Vault's Kubernetes auth plugin the tests use (bin/).

.PHONY: generate
generate: ## Regenerate gen/ from openapi.yaml.
	go generate ./...

.PHONY: generate-check
generate-check: generate ## Fail when gen/ differs from what openapi.yaml generates.
	git diff --exit-code -- gen/
	test -z "$$(git status --porcelain -- gen/)" || { git status --porcelain -- gen/; echo "untracked generated files"; exit 1; }

.PHONY: fmt-check
fmt-check: ## Fail when a Go file is not gofmt-clean.
	@out=$$(gofmt -l $(GO_FILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: vet
vet: ## go vet every package, the test-only modules included.
	go vet ./...
	cd test/promrules && go vet ./...

$(REDOCLY): .ci/npm/package.json .ci/npm/package-lock.json
	mkdir -p $(NPM_DIR)
	cp .ci/npm/package.json .ci/npm/package-lock.json $(NPM_DIR)/
	npm ci --prefix $(NPM_DIR) --no-audit --no-fund --loglevel=error
	touch $@

.PHONY: lint-spec
lint-spec: $(REDOCLY) ## Lint openapi.yaml with Redocly (installed project-locally).
	$(REDOCLY) lint --config .redocly.yaml openapi.yaml

.PHONY: lint
lint: fmt-check vet staticcheck lint-spec ## All static checks.

.PHONY: staticcheck
staticcheck: $(STATICCHECK) ## staticcheck's default checks (bugs, simplifications, deprecated APIs, style) over every package.
	$(STATICCHECK) ./...

$(STATICCHECK):
	@echo "installing staticcheck v0.8.2 into .tools/bin (first build takes a minute, then cached)"
	GOBIN=$(abspath .tools/bin) go install honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: bench
bench: ## Go benchmarks, wrk pass-through, rewrap and replica benchmarks (results go to docs/benchmarks.md).
	go test -run '^$$' -bench . -benchmem ./...
	bash bench/passthrough.sh --write
	bash bench/rewrap.sh --write
	go run ./bench/replicas

.PHONY: ci
ci: lint generate-check test ## What CI runs.
