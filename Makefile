# AgentFlow: `make run` (embedded, one port) and `make test` (the whole suite) do their own set-up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AF := $(VENV)/bin/agentflow
STAMP := $(VENV)/.installed-stamp
STUDIO_OUT := studio/out/index.html
STUDIO_SRC := $(shell find studio/app studio/components studio/lib studio/package.json studio/package-lock.json studio/next.config.* studio/tailwind.config.* studio/postcss.config.* -type f 2>/dev/null)
export AGENTFLOW_HOME ?= $(HOME)/.agentflow
export AGENTFLOW_PORT ?= 8000

.PHONY: run test test-fast test-chaos test-redis-floor up down bench studio venv migrate clean help

help:
	@echo "make run    - AgentFlow embedded (SQLite, no Redis): API + Studio on http://localhost:$(AGENTFLOW_PORT)"
	@echo "make test   - the whole test suite (Python, Studio unit tests, browser tests); installs chromium, fails on any skip"
	@echo "make test-fast - without browser, distributed and chaos tests; skips allowed (no services needed)"
	@echo "make up     - distributed mode: API, Celery workers per queue, beat, Flower (local Redis + Postgres)"
	@echo "make bench  - every benchmark; rewrites bench/RESULTS.md"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(STAMP)

$(STUDIO_OUT): $(STUDIO_SRC) $(STAMP)
	@if [ -f studio/package.json ]; then \
	  command -v npm >/dev/null || { echo "npm is required to build Studio (apt-get install nodejs npm)"; exit 1; }; \
	  cd studio && npm ci --no-audit --no-fund --loglevel=error && npm run build; \
	else echo "no studio/ yet"; fi

studio: $(STUDIO_OUT)

migrate: $(STAMP)
	$(AF) migrate

run: $(STAMP) $(STUDIO_OUT)
	@mkdir -p $(AGENTFLOW_HOME)
	$(AF) migrate
	@echo "== example: order status (rules router + SQL over the bundled SQLite shop, no API key) =="
	@$(PY) -c "from agentflow.examples import ensure_sample_db; from pathlib import Path; import os; print(ensure_sample_db(Path(os.environ['AGENTFLOW_HOME'])))" > $(AGENTFLOW_HOME)/.sample_dsn
	AGENTFLOW_SAMPLE_DSN=$$(cat $(AGENTFLOW_HOME)/.sample_dsn) $(AF) run examples/order_status.json --input "Where is my order?" --metadata '{"customer": "acme"}'
	@if [ -n "$$OPENAI_API_KEY$$OPENAI_BASE_URL" ] && [ -n "$$SHOP_DSN" ]; then \
	  echo "== example: support triage =="; \
	  $(AF) run examples/triage.json --input "Please draw a cat and explain it" --metadata '{"customer": "acme"}'; \
	else echo "(support-triage example skipped: set OPENAI_API_KEY or OPENAI_BASE_URL, and SHOP_DSN, to run it)"; fi
	@echo "== AgentFlow on http://localhost:$(AGENTFLOW_PORT) (Ctrl-C to stop) =="
	$(AF) serve --port $(AGENTFLOW_PORT)

# Nothing may skip: a missing service or browser fails the run (tests/skip_policy.py).
test: $(STAMP) $(STUDIO_OUT)
	@bash scripts/services.sh; s=$$?; bash scripts/ensure_tools.sh; c=$$?; \
	  if [ $$s -ne 0 ] || [ $$c -ne 0 ]; then echo "make test: stopped - what is MISSING is named above" >&2; exit 1; fi
	@if [ -f studio/package.json ]; then cd studio && npm test; fi
	AGENTFLOW_TEST_ALLOW_SKIP=0 $(PY) -m pytest -q -p no:cacheprovider --durations=15

# For a developer without the services: no browser, distributed or chaos tests, and skips allowed.
test-fast: $(STAMP)
	AGENTFLOW_TEST_ALLOW_SKIP=1 $(PY) -m pytest -q -m "not browser and not distributed and not chaos" -p no:cacheprovider

# The redis-py floor in pyproject.toml against the Redis-facing tests (also part of `make test`).
test-redis-floor: $(STAMP)
	bash scripts/services.sh
	$(PY) -m pytest -q -p no:cacheprovider tests/test_dependency_pins.py

test-chaos: $(STAMP)
	bash scripts/services.sh
	AF_CHAOS_LONG=1 $(PY) -m pytest -q -m chaos -p no:cacheprovider

up: $(STAMP) $(STUDIO_OUT)
	bash scripts/services.sh
	bash scripts/up.sh

down:
	bash scripts/down.sh

bench: $(STAMP)
	bash scripts/services.sh
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) studio/node_modules studio/out studio/.next
