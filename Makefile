# The README's two commands. Each creates .venv when missing, installs the
# pinned dependencies when pyproject.toml or constraints.txt changed, and runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

ANALYZER := tests/interop/kql-analyzer

.PHONY: bench test test-slow lint install clean kql-analyzer

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

## make test: lint, then the project's tests but those marked slow (about a minute and a half on 2 cores)
test: lint kql-analyzer
	$(BIN)/python -m pytest tests -n 2 -m "not slow" --snapshot-warn-unused

## make test-slow: the tests marked slow (whole benchmark runs, xdist inside pytest, big stores); CI runs both
test-slow: $(STAMP) kql-analyzer
	$(BIN)/python -m pytest tests -n 2 -m slow

## make lint: ruff (rules and format), mypy on the package, the package map's import contract
lint: $(STAMP)
	$(BIN)/ruff check plugins tests benchmarks examples
	$(BIN)/ruff format --check plugins tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

clean:
	rm -rf $(VENV) reports .ctirealm-cache
