# Sightline: `make demo` runs the whole pipeline from a fresh clone; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Run pipeline commands with the project's environment first on PATH (dvc.yaml calls `python`).
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: install browser demo tune data test test-cluster test-unit lint serve clean postgres cluster-up cluster-down

# The environment, rebuilt when pyproject.toml or constraints.txt change. The stack's ~21k .py
# files are byte-compiled once here, on every core (pip would do it on one). Python's "compile on
# first import" is no substitute: where PYTHONDONTWRITEBYTECODE is set (this CI, many images) it
# never writes a .pyc, and every stage process and Ray worker re-compiles torch, Ray and MLflow
# from source (measured: a 1-epoch fit 105 s without .pyc files, 49 s with them). compileall
# exits 1 on the few files that are not Python 3 (templates, vendored tests): not an error here.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e '.[dev]'
	$(BIN)/python -m compileall -q -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $@

install: $(BIN)/.installed

# Synthetic dataset (deterministic), versioned by DVC as data.dvc.
data: install
	$(BIN)/sightline data synth
	$(BIN)/dvc add data --quiet

# The main job: every family of every task group trained, evaluated, registered, benchmarked.
DEMO_TARGETS := bench_detectors bench_otdr bench_identification

# Quiet: one line per stage and per epoch, libraries' logs in logs/<stage>.log;
# `make demo VERBOSE=1` prints them all. `sightline repro` starts one Ray for every stage.
demo: export SIGHTLINE_VERBOSE = $(VERBOSE)
demo: data
	$(BIN)/sightline repro $(DEMO_TARGETS)
	$(BIN)/sightline summary

# Ray Tune searches over params.yaml tune.families (after the demo; minutes per family).
tune: install
	$(BIN)/sightline repro tuning

# Headless Chromium + chromedriver for the browser tests (Debian packages; no browser download).
# Installed when missing and when root; otherwise those tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "chromium/chromedriver missing (not root or no apt-get): browser tests will skip"; fi; \
	fi

# Every test, the multi-node cluster tests (`cluster` marker, run last) included;
# `make test-cluster` runs those alone.
test: install browser postgres
	$(BIN)/python -m pytest --durations=25

test-cluster: install postgres
	$(BIN)/python -m pytest -m cluster

# PostgreSQL for the cluster tests' MLflow server (Debian's package; the tests start a throwaway
# server in a temp dir). Installed when missing and we are root; else the cluster tests skip.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    apt-get update -q >/dev/null && apt-get install -y -q postgresql >/dev/null; } || \
	  echo "PostgreSQL not installed (needs root + apt-get): the cluster tests will skip"

# A real cluster on this host: Ray head + 2 worker nodes, MLflow server on PostgreSQL, a DVC
# directory remote. `source $(CLUSTER_DIR)/cluster.env` points commands at it;
# SIGHTLINE_CLUSTER_DIR=$(CLUSTER_DIR) makes the cluster tests reuse it.
CLUSTER_DIR ?= .cluster
cluster-up: install postgres
	$(BIN)/python -m tests.integration.cluster up $(CLUSTER_DIR)

cluster-down: install
	$(BIN)/python -m tests.integration.cluster down $(CLUSTER_DIR)

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

serve: install
	$(BIN)/sightline serve

clean:
	rm -rf artifacts reports metrics mlflow.db mlartifacts
