# Sightline: `make demo` runs the whole pipeline from a fresh clone; `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Run pipeline commands with the project's environment first on PATH (dvc.yaml calls `python`).
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: install browser demo tune data test test-unit lint serve clean

# The environment, rebuilt when pyproject.toml or constraints.txt change. --no-compile: pip would
# byte-compile all ~21k .py files of the stack (~1 min of one core); Python compiles the modules
# a command imports on first use instead.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -c constraints.txt -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# Synthetic dataset (deterministic), versioned by DVC as data.dvc.
data: install
	$(BIN)/sightline data synth
	$(BIN)/dvc add data --quiet

# The main job: every family of every task group trained, evaluated, registered, benchmarked.
DEMO_TARGETS := bench_detectors bench_otdr bench_identification

# Quiet: one line per stage and per epoch, libraries' logs in logs/<stage>.log;
# `make demo VERBOSE=1` prints them all.
demo: export SIGHTLINE_VERBOSE = $(VERBOSE)
demo: data
	$(BIN)/dvc repro $(DEMO_TARGETS)
	$(BIN)/sightline summary

# Ray Tune searches over params.yaml tune.families (after the demo; minutes per family).
tune: install
	$(BIN)/dvc repro tuning

# Headless Chromium + chromedriver for the browser tests (Debian packages; no browser download).
# Installed when missing and when root; otherwise those tests skip and say why.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium chromium-driver; \
	  else echo "chromium/chromedriver missing (not root or no apt-get): browser tests will skip"; fi; \
	fi

test: install browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

serve: install
	$(BIN)/sightline serve

clean:
	rm -rf artifacts reports metrics mlflow.db mlartifacts
