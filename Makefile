# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relaxkd-installed
PYTEST_ARGS ?=

.PHONY: setup wordnet demo docs lint test test-all bench bench-quick clean

$(STAMP): pyproject.toml
	@echo "[setup 1/4] virtual environment $(VENV)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup 2/4] pip (upgrade)"
	@$(PY) -m pip install -q --upgrade pip
	@# torch first and pinned: served from local disk on the project's machines
	@echo "[setup 3/4] torch 2.14.1 + torchvision 0.29.1 (about a minute)"
	@$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	@echo "[setup 4/4] relaxkd and its dependencies (open_clip, lightning, nltk, faiss, captum, ...; about a minute)"
	@$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)
	@echo "[setup] done: $(VENV)"

setup: $(STAMP) wordnet

# WordNet 3.0 for NLTK: found if present, else built offline from Debian's wordnet-base
wordnet: $(STAMP)
	@echo "[setup] WordNet 3.0 for NLTK"
	@$(PY) -m relaxkd.wordnet

# the measured run time and the machine it was measured on: README "Quick start"; prints the report path last
demo: setup
	$(VENV)/bin/relaxkd run configs/demo.yaml

# docs/config.md from the config schema (tests/test_configdoc.py fails when it is stale)
docs: $(STAMP)
	$(PY) -m relaxkd.configdoc > docs/config.md

# ruff (configured in pyproject.toml); .ci/run runs it before the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench-quick: setup
	$(PY) benchmarks/bench_relax.py --quick
	$(PY) benchmarks/bench_train.py --quick

bench: setup
	$(PY) benchmarks/bench_relax.py --full
	$(PY) benchmarks/bench_train.py --full

clean:
	rm -rf runs .pytest_cache
