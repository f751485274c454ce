# ns8-imapsync developer commands. `make demo` and `make test` work on a fresh
# Debian 12 machine: they install what they need first (scripts/install-deps.sh).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/tests:$(CURDIR)/imageroot/pypkg

.PHONY: deps demo test test-containers reliability bench images up down status lint clean

deps:
	@bash scripts/install-deps.sh

demo: deps
	$(PY) -m localnode.demo

test: deps
	$(PY) -m ruff check imageroot/pypkg tests bench imapsync-container/crond imapsync-container/syncctl
	$(PY) -m pytest
	./test-module.sh local

# The reliability suite with its long variants, then the README's table from its
# results (tests/outputs/reliability/). `make test` runs the short variants.
reliability: deps
	$(PY) -m pytest tests/reliability -p no:cacheprovider -m "reliability_long or not reliability_long"
	$(PY) -m reliability.report

# Side by side with imapsync and doveadm backup (bench/README.md): bench/results/<date>.json,
# then bench/README.md. imapsync is measured when one is on PATH, e.g.
# IMAPSYNC_DIR=/opt/imapsync-beside make bench (never copied into the repository).
IMAPSYNC_DIR ?=
bench: deps
	PATH="$(if $(IMAPSYNC_DIR),$(IMAPSYNC_DIR):)$$PATH" $(PY) bench/run.py $(BENCH_ARGS)

# The real images, unit and rootless containers (README: "Container suite"). It
# changes system settings (tests/containers/prepare-host.sh), so it is not part of
# `make test`; .ci/run runs it after `make test`.
test-containers: deps
	bash tests/containers/prepare-host.sh
	NS8_CONTAINER_SUITE=1 $(PY) -m pytest tests/containers -v -p no:cacheprovider -o timeout=900 --durations=0

# Both images from the local Debian base (no registry), as the container suite builds them.
images:
	bash tests/containers/prepare-host.sh
	LOCAL_BASE=1 ./build-images.sh

up: deps
	$(PY) -m localnode up

down:
	@if [ -x $(PY) ]; then $(PY) -m localnode down; fi

status:
	$(PY) -m localnode status

lint: deps
	$(PY) -m ruff check imageroot/pypkg tests bench imapsync-container/crond imapsync-container/syncctl

clean: down
	rm -rf .localnode .venv .venv-host

# ---- admin UI (ui/, README "Admin UI"): `make test` runs its tests too ----
.PHONY: ui test-ui
ui:
	@bash scripts/install-ui-deps.sh

test-ui: deps
	$(PY) -m pytest tests/ui tests/test_ui_actions.py
