# Everything a fresh machine needs: `make run` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8400

.PHONY: run test check bench install services clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

run: export TALLYGATE_ADMIN_KEY ?= tg-admin-demo
run: install
	$(BIN)/tallygate serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# The PostgreSQL tests start their own throw-away server; install Debian's package if missing.
services:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { echo "installing PostgreSQL (Debian package) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }

# Lint, types and the layering contract first, then the tests.
check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: check services
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) *.db *.db-wal *.db-shm
