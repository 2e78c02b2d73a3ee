# The two commands of the README: `make demo` and `make test`. Each sets up .venv/ first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tnx-installed

.PHONY: demo test lint setup clean bench bench-tools bench-router native test-native

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

# The batching policy and the simulator compiled with mypyc into build/native; used where
# TNX_NATIVE=1 is set (router/native.py). Rebuild after editing any of router/native.py's
# MODULES: a stale build is refused, not run.
native: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,native]'
	$(BIN)/python -c "from router.native import build; print('compiled into', build())"

# The policy's and the simulator's tests on the compiled modules, and their equivalence
# with the Python ones.
test-native: native
	TNX_NATIVE=1 $(BIN)/python -m pytest -q tests/router/test_native.py \
	  tests/router/test_equivalence.py tests/router/test_simulator.py \
	  tests/router/test_policy.py tests/router/test_properties.py tests/router/test_driver.py \
	  tests/router/test_latency.py tests/router/test_prefix_batch.py tests/bench/test_simulate.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
