# The two commands of the README's quickstart are `make demo` and `make test`.
SHELL := /bin/bash
VENV := .venv/bin
export LORECHAT_HOME ?= $(CURDIR)/.lorechat
export HF_HUB_OFFLINE := 1
export DO_NOT_TRACK := 1

.PHONY: setup demo ingest dev test test-slow lint typecheck bench bench-freshness

setup:
	@bash scripts/setup.sh

## Ingest the bundled example documents on the local default, then search them.
demo: export LORECHAT_SOURCE ?= $(CURDIR)/examples/documents
demo: setup
	$(VENV)/lorechat ingest
	$(VENV)/lorechat search "How are deleted documents handled?" -k 3
	$(VENV)/lorechat status

## The Dagster UI and daemon on http://127.0.0.1:3000 with the local default (sensors running).
dev: setup
	$(VENV)/lorechat dev

lint: setup
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .

typecheck: setup
	$(VENV)/mypy

## Everything CI runs: lint, type check, the whole test suite.
test: lint typecheck
	$(VENV)/pytest -m "not slow"

test-slow: setup
	$(VENV)/pytest -m slow

bench: setup
	$(VENV)/python bench/ingest.py $(or $(DOCS),examples/documents)

bench-freshness: setup
	$(VENV)/python bench/freshness.py

.PHONY: bench-setup bench-compare bench-quick

## The peer pipelines of the side-by-side benchmark (pyproject's bench-peers group) into .venv,
## with the installed torch, transformers, sentence-transformers, lancedb, pyarrow, numpy,
## unstructured and pandas held as constraints (pip stops rather than change them).
bench-setup: setup
	$(VENV)/pip freeze | grep -iE '^(torch|transformers|sentence-transformers|lancedb|pyarrow|numpy|unstructured|pandas)==' > .venv/bench-constraints.txt
	$(VENV)/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['bench-peers']))" > .venv/bench-peers.txt
	$(VENV)/pip install -c .venv/bench-constraints.txt -r .venv/bench-peers.txt torch==2.13.0

## Ingestion (ours, unstructured-ingest, LlamaIndex, encode ceiling), retrieval quality, serving
## and scale, side by side: report.md and report.json under bench/results/compare.
bench-compare: setup
	$(VENV)/python -m bench $(BENCH_ARGS)

## A few minutes' version of the same: 10 files per folder, 20 SciFact queries, small serving/scale.
bench-quick: setup
	$(VENV)/python -m bench --output bench/results/quick --limit 10 --queries 20 --corpus-sample 30 \
	  --serve-rows 10000 --serve-clients 4 --serve-seconds 3 --scale-sizes 10000 --scale-queries 100 $(BENCH_ARGS)
