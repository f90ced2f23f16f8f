# `make test` and `make demo` each build .venv from the pinned versions on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test test-scale demo bench venv docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --only-binary=:all: -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# First pyflakes' rules (ruff, pyproject.toml [tool.ruff]), the layers contract (pyproject.toml
# [tool.importlinter]) and the docs build, then the tests: two workers,
# as most of a test's time is a dbt subprocess, and every test has its own files and emulator.
test: $(STAMP)
	$(BIN)/ruff check --quiet .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory docs
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# The docs site (docs/, mkdocs.yml) into site/; --strict turns a broken link or anchor into a failure.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# Scale checks (a million rows, minutes each): not part of `make test`.
test-scale: $(STAMP)
	$(BIN)/python -m pytest -m scale tests/scale $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/python integration_project/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/emulator_throughput.py
	$(BIN)/python benchmarks/pipeline.py
	$(BIN)/python benchmarks/ratios.py
	$(BIN)/python benchmarks/cost.py
	$(BIN)/python benchmarks/retention.py --keep-days 7

clean:
	rm -rf $(VENV) integration_project/target integration_project/logs integration_project/dbt_packages integration_project/*.duckdb integration_project/documents site
