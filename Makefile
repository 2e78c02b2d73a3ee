# The two commands of the README: `make demo` and `make test`. Each sets up .venv/ first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tnx-installed

.PHONY: demo test lint setup clean bench bench-tools bench-router

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, exactly: the CPU build of 2.13.0 lies on this machine's disk.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tnx demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/tnx bench plan

# NVIDIA's perf_analyzer (from the tritonclient 2.45.0 wheel) for `tnx bench router`.
bench-tools: $(STAMP)
	$(BIN)/python -m bench.tools

bench-router: bench-tools
	$(BIN)/tnx bench router --out bench-out/router

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
