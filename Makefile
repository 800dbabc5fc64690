# incident-operator: every command of the README is a target here.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER_DIR ?= $(CURDIR)/.localcluster
LOCALCLUSTER := $(PYTHON) localcluster/localcluster.py
DEMO_HTTP_PORT ?= 18080

.PHONY: help venv build-cluster cluster cluster-down cluster-status crds lint unit e2e test demo demo-down bench clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed  ## create .venv with the operator and its dev tools

build-cluster:  ## build (or reuse) the cached local-cluster binaries and Alertmanager
	$(LOCALCLUSTER) build
	$(LOCALCLUSTER) build-alertmanager

cluster:  ## start the local cluster; the last line is KUBECONFIG=<path>
	$(LOCALCLUSTER) up --dir $(CLUSTER_DIR)

cluster-down:  ## stop the local cluster and remove its data
	$(LOCALCLUSTER) down --dir $(CLUSTER_DIR)

cluster-status:  ## show the local cluster's components
	$(LOCALCLUSTER) status --dir $(CLUSTER_DIR)

crds: venv  ## regenerate crds/ from the pydantic models
	$(BIN)/python -m incident_operator.crdgen crds/

lint: venv  ## ruff and mypy
	$(BIN)/ruff check operator tests localcluster bench hack
	$(BIN)/ruff format --check operator tests localcluster bench hack
	$(BIN)/mypy

unit: venv  ## unit tests (pure code, no cluster)
	$(BIN)/pytest tests/unit -q

e2e: venv build-cluster  ## e2e tests against the local cluster (started and stopped by the tests)
	$(BIN)/pytest tests/e2e -q

test: venv build-cluster  ## everything CI runs: lint, unit and e2e tests
	$(MAKE) lint
	$(BIN)/pytest tests -q

demo: venv build-cluster  ## start the cluster and the operator, show the cluster
	bash hack/demo.sh

demo-down:  ## stop what `make demo` started
	bash hack/demo.sh down

clean: cluster-down  ## remove the virtual environment and caches (not the binary cache)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench: venv build-cluster  ## benchmarks on a local cluster of their own; writes BENCHMARKS.md
	$(BIN)/python bench/bench.py
