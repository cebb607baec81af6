# The two set-up commands (see README):
#   make shadow   — install into .venv and run a one-market-day (1440-minute) shadow on the embedded default
#                   (sim, memory counters, SQLite journal, console notifier), long enough to exercise both the
#                   hourly and the daily cap; DURATION=… and ARGS=… pass through.
#   make test     — install into .venv (with dev tools), make sure Redis answers (start one if not), check style and
#                   types (ruff, mypy), run the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DURATION ?= 1440
ARGS ?=

.PHONY: install install-dev shadow test lint check bench services

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"

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

bench: install-dev services
	$(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_counters.py
