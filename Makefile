# The two set-up commands (see README):
#   make shadow   — install into .venv and run a one-market-day (1440-minute) shadow on the embedded default
#                   (sim, memory counters, SQLite journal, console notifier), long enough to exercise both the
#                   hourly and the daily cap; DURATION=… and ARGS=… pass through.
#   make test     — install into .venv (with dev tools), make sure Redis answers (start one if not), check style and
#                   types (ruff, mypy), run the whole suite.
#   make release  — build this commit's wheel into dist/releases/ (named by version) and record version + git commit
#                   in dist/releases/RELEASES: what docs/rollout.md's rollback installs. Refuses a dirty tree (ALLOW_DIRTY=1
#                   for a test build, recorded as <commit>-dirty) and a version already released from another commit.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 1440
ARGS ?=

.PHONY: install install-dev lock shadow test lint check bench services release

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Ranges live in pyproject.toml; the exact versions installed are the ones pinned in requirements.lock.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -c requirements.lock -e ".[dev]"

# Re-resolve the lock from pyproject.toml's ranges in a throwaway venv (newest versions the ranges allow).
lock:
	rm -rf .lock-venv && $(PY) -m venv .lock-venv && .lock-venv/bin/python -m pip install --quiet ".[dev]"
	{ echo "# Exact versions for 'make install' / 'make test' (pip constraints: pip install -c requirements.lock -e .[dev])."; \
	  echo "# pyproject.toml holds the ranges. Regenerate after changing them: make lock."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -iv '^ultra-signals'; } > requirements.lock
	rm -rf .lock-venv

shadow: install
	$(BIN)/ultra-signals shadow --duration $(DURATION) $(ARGS)

services:
	bash scripts/test_services.sh

test: install-dev services
	$(MAKE) --no-print-directory check
	$(BIN)/python -m pytest -q $(ARGS)

lint: install-dev
	$(MAKE) --no-print-directory check

check:
	$(BIN)/ruff check ultra_signals tests bench scripts
	$(BIN)/ruff format --check ultra_signals tests bench scripts
	$(BIN)/mypy

# NAUTILUS_PYTHON: the Python of a separate venv holding nautilus_trader (never this project's), for the comparison.
NAUTILUS_PYTHON ?= /work/nautilus-venv/bin/python

bench: install-dev services
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_pipeline.py --executor --timeframes 1m,5m,15m,1h
	$(BIN)/python bench/bench_counters.py
	$(BIN)/python bench/bench_replay.py --repeat 2
	$(BIN)/python bench/bench_replay.py --memory
	@if [ -x "$(NAUTILUS_PYTHON)" ]; then $(BIN)/python bench/bench_nautilus.py --nautilus-python "$(NAUTILUS_PYTHON)"; \
	else echo "bench_nautilus skipped: no $(NAUTILUS_PYTHON) (see bench/bench_nautilus.py)"; fi

RELEASES ?= dist/releases

release: $(BIN)/python
	@set -e; \
	ver=$$($(BIN)/python -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])"); \
	commit=$$(git rev-parse HEAD 2>/dev/null || echo unknown); \
	if [ -n "$$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then \
	  if [ -z "$(ALLOW_DIRTY)" ]; then \
	    echo "make release: the tree has uncommitted changes; commit them first (ALLOW_DIRTY=1 for a test build)" >&2; exit 2; \
	  fi; commit="$$commit-dirty"; \
	fi; \
	whl="ultra_signals-$$ver-py3-none-any.whl"; mkdir -p "$(RELEASES)"; touch "$(RELEASES)/RELEASES"; \
	if [ -f "$(RELEASES)/$$whl" ] && ! grep -q "^$$ver $$commit " "$(RELEASES)/RELEASES"; then \
	  echo "make release: $(RELEASES)/$$whl was built from another commit; bump the version in pyproject.toml and ultra_signals/__init__.py" >&2; exit 2; \
	fi; \
	$(BIN)/python -m pip wheel --quiet --no-deps -w "$(RELEASES)" .; \
	test -f "$(RELEASES)/$$whl" || { echo "make release: pip did not produce $$whl" >&2; exit 3; }; \
	grep -q "^$$ver $$commit " "$(RELEASES)/RELEASES" || echo "$$ver $$commit $$whl $$(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$(RELEASES)/RELEASES"; \
	echo "released $$ver ($$commit): $(RELEASES)/$$whl"
