# Everything a fresh machine needs: `make run` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8400

DASHBOARD_OUT = src/tallygate/dashboard/static/index.html

.PHONY: run test check bench install services clean dashboard dist agents

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test,bench,otel]'
	touch $@

install: $(VENV)/.installed $(DASHBOARD_OUT)

# The dashboard: npm installs the lockfile's packages, Vite builds into the Python package.
dashboard/node_modules/.package-lock.json: dashboard/package-lock.json
	cd dashboard && npm ci --no-audit --no-fund --loglevel=error

$(DASHBOARD_OUT): dashboard/node_modules/.package-lock.json dashboard/index.html dashboard/vite.config.js \
		$(wildcard dashboard/src/*.js dashboard/src/*.css dashboard/src/pages/*.js)
	cd dashboard && npm run --silent build -- --logLevel warn

dashboard: $(DASHBOARD_OUT)

# The coding-agent CLIs the tests run for real (tests/agents): pinned in its package-lock.json,
# each with its native linux-x64 binary (an optional dependency of its npm package).
AGENTS_CLIS = tests/agents/node_modules/.package-lock.json
$(AGENTS_CLIS): tests/agents/package-lock.json
	cd tests/agents && npm ci --no-audit --no-fund --loglevel=error
	touch $@

agents: $(AGENTS_CLIS)

# A wheel that carries the built dashboard (package data).
dist: $(DASHBOARD_OUT) | $(BIN)/activate
	$(BIN)/pip install -q build
	$(BIN)/python -m build --wheel --outdir dist

run: export TALLYGATE_ADMIN_KEY ?= tg-admin-demo
run: install
	$(BIN)/tallygate serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

# The PostgreSQL and Redis tests start their own throw-away servers, the dashboard tests drive
# Debian's Chromium: install the packages if missing.
services:
	@command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || \
	  { echo "installing PostgreSQL (Debian package) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
	@command -v redis-server >/dev/null 2>&1 || \
	  { echo "installing Redis (Debian package) for the tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@test -x /usr/bin/chromium || \
	  { echo "installing Chromium (Debian package) for the dashboard tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Lint, types and the layering contract first, then the tests.
check: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: check services agents
	$(BIN)/python -m pytest -q --durations=25

# Portkey and LiteLLM in the same rounds when installed in $(PEERS) (bash ../shared/bench/run_peers.sh --setup)
PEERS ?= /tmp/peers
bench: install services
	$(BIN)/python bench/run_bench.py --peers $(PEERS)
	$(BIN)/python bench/redis_budget.py
	nice $(BIN)/python bench/providers_bench.py

clean:
	rm -rf $(VENV) *.db *.db-wal *.db-shm *.db.journal *.duckdb *.duckdb.wal dist dashboard/node_modules tests/agents/node_modules tests/docs/node/node_modules src/tallygate/dashboard/static
