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
