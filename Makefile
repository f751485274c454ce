# ns8-imapsync developer commands. `make demo` and `make test` work on a fresh
# Debian 12 machine: they install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/tests:$(CURDIR)/imageroot/pypkg

.PHONY: deps demo test up down status lint clean

deps:
	@bash scripts/install-deps.sh

demo: deps
	$(PY) -m localnode.demo

test: deps
	$(PY) -m ruff check imageroot/pypkg tests
	$(PY) -m pytest

up: deps
	$(PY) -m localnode up

down:
	@if [ -x $(PY) ]; then $(PY) -m localnode down; fi

status:
	$(PY) -m localnode status

lint: deps
	$(PY) -m ruff check imageroot/pypkg tests

clean: down
	rm -rf .localnode .venv .venv-host
