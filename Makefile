# The README's two commands. Each creates .venv when missing, installs the
# pinned dependencies when pyproject.toml or constraints.txt changed, and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bench test lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,kusto,openai,inspect,mcp]"
	touch $(STAMP)

install: $(STAMP)

## make bench: build the telemetry store, run the benchmark, write reports/
bench: $(STAMP)
	$(BIN)/ctirealm bench --report-dir reports

## make test: the project's own tests
test: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks examples
	$(BIN)/python -m pytest tests -n 2 --snapshot-warn-unused

lint: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks examples

clean:
	rm -rf $(VENV) reports .ctirealm-cache
