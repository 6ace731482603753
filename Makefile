# Two commands for a fresh machine: `make demo` (the embedded log, no server) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= ./headwater-demo-data

.PHONY: demo test lint typecheck unit long bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh "$(BIN)/headwater" "$(DEMO_DIR)"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

long: $(STAMP)
	HEADWATER_LONG=1 $(BIN)/python -m pytest -q -m long tests

bench: $(STAMP)
	$(BIN)/python benchmarks/log_append.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) $(DEMO_DIR)-fraud
