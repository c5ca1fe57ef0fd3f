# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.relaxkd-installed
PYTEST_ARGS ?=

.PHONY: setup wordnet demo test test-all bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: served from local disk on the project's machines
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) wordnet

# WordNet 3.0 for NLTK: found if present, else built offline from Debian's wordnet-base
wordnet: $(STAMP)
	$(PY) -m relaxkd.wordnet

demo: setup
	$(VENV)/bin/relaxkd run configs/demo.yaml

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
