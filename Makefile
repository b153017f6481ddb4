# The two commands of the README: `make demo` (the whole pipeline on the synthetic data set) and `make test`.
VENV ?= .venv
PYTHON ?= python3
RUN_ROOT ?= runs/demo
PRESET ?= demo
BIN := $(VENV)/bin
STAMP := $(VENV)/.motionfit-installed
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: install demo test test-sweeps test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,dask]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/motionfit demo --run-root $(RUN_ROOT) --preset $(PRESET)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q --timeout 900 -m "not sweeps"

test-sweeps: $(STAMP)
	$(BIN)/python -m pytest -q --timeout 900 -m sweeps

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs .pytest_cache .ruff_cache
