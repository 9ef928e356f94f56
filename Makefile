# Set-up and checks. Every target creates the virtual environment it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := batchscore tests data jobs benchmarks

.PHONY: demo test test-airflow lint bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## demo: run the demo job (jobs/demo.toml): score data/demo with its model into out/demo
demo: $(STAMP)
	$(BIN)/batchscore run jobs/demo.toml
	@echo "scores written to out/demo (report: out/demo-report.json); first rows:"
	$(BIN)/python -c "import polars as pl; print(pl.read_parquet('out/demo/*.parquet').head(5))"

## test: the test suite (no GPU needed; GPU tests skip)
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

## test-airflow: jobs/airflow_dag.py under `airflow dags test` in a real Airflow 3.3.2, built once in .cache/ (2-4 min)
test-airflow: $(STAMP)
	BATCHSCORE_TEST_AIRFLOW=1 $(BIN)/python -m pytest -q -rs -m airflow

## lint: ruff and mypy
lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

## bench: throughput and peak memory against hand-written loops, in interleaved rounds (about 20 minutes on 2 cores)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

## bench-quick: the same on 200k rows (about 30 s)
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/bench.py --quick

clean:
	rm -rf $(VENV) out build *.egg-info .pytest_cache .mypy_cache .ruff_cache benchmarks/.cache .cache
