# The README's two commands. Each creates .venv when missing, installs the
# pinned dependencies when pyproject.toml or constraints.txt changed, and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

ANALYZER := tests/interop/kql-analyzer

.PHONY: bench test lint install clean kql-analyzer

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,kusto,openai,inspect,mcp,geo]"
	touch $(STAMP)

install: $(STAMP)

## Microsoft's KQL analyzer (npm, pinned by its lock file) for tests/interop; skipped without node
kql-analyzer:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory $(ANALYZER)/node_modules/.installed; \
	else \
		echo "kql-analyzer: node and npm not found; the tests against Microsoft's KQL analyzer will be skipped"; \
	fi

$(ANALYZER)/node_modules/.installed: $(ANALYZER)/package.json $(ANALYZER)/package-lock.json
	cd $(ANALYZER) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed \
		|| echo "kql-analyzer: npm ci failed; the tests against Microsoft's KQL analyzer will be skipped"

## make bench: build the telemetry store, run the benchmark, write reports/
bench: $(STAMP)
	$(BIN)/ctirealm bench --report-dir reports

## make test: the project's own tests
test: $(STAMP) kql-analyzer
	$(BIN)/ruff check plugins tests benchmarks examples
	$(BIN)/ruff format --check plugins tests benchmarks examples
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest tests -n 2 --snapshot-warn-unused

lint: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks examples
	$(BIN)/ruff format --check plugins tests benchmarks examples
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf $(VENV) reports .ctirealm-cache
