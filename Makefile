# Set-up and everyday commands. Every install step lives here or in pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-default test-scaled bench lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)

# Reinstalls whenever pyproject.toml changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/orchestrator up

# The suite runs twice: as configured by default (stores on SQLite and on
# PostgreSQL, Prefect on SQLite), then scaled (ORCH_TEST_SCALED=1: stores on
# PostgreSQL only, Prefect on PostgreSQL with Redis messaging). The scaled run
# starts even when the first fails; the target fails when either does.
test: install
	@status=0; \
	echo "== default configuration"; \
	$(BIN)/python -m pytest || status=1; \
	echo "== scaled configuration (ORCH_TEST_SCALED=1)"; \
	ORCH_TEST_SCALED=1 $(BIN)/python -m pytest || status=1; \
	exit $$status

# One configuration only.
test-default: install
	$(BIN)/python -m pytest

test-scaled: install
	ORCH_TEST_SCALED=1 $(BIN)/python -m pytest

# The matching benchmark's peers (the `bench` extra), under their own stamp.
$(VENV)/.installed-bench: $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

# wrk (Debian's package) drives bench.ingest's saturation runs; without it
# those runs are skipped and say so.
bench: $(VENV)/.installed-bench
	@command -v wrk >/dev/null || apt-get install -y wrk \
		|| (apt-get update && apt-get install -y wrk) \
		|| sudo -n apt-get install -y wrk \
		|| echo "make bench: could not install wrk (Debian package 'wrk'); bench.ingest skips its wrk runs"
	$(BIN)/python -m bench

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
