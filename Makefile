# Everything a fresh machine needs: `make run` and `make test` create the virtualenv themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8400
export TALLYGATE_ADMIN_KEY ?= tg-admin-demo

.PHONY: run test bench install clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/tallygate serve --host $(HOST) --port $(PORT) $(if $(CONFIG),--config $(CONFIG))

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python bench/run_bench.py

clean:
	rm -rf $(VENV) *.db *.db-wal *.db-shm
