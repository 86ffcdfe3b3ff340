# RayanPBX: `make run` serves the embedded default; `make test` runs the whole suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip --disable-pip-version-check -q

.PHONY: run test lint bench install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(PY)
	$(PIP) install -r requirements.txt
	touch $@

# mysqlclient needs the MariaDB client headers: installed when they are present or when
# DATABASE_URL asks for MySQL/MariaDB (then a missing header is an error worth seeing).
$(VENV)/.installed-test: requirements.txt requirements-test.txt requirements-mysql.txt | $(PY)
	$(PIP) install -r requirements-test.txt
	@if pkg-config --exists libmariadb 2>/dev/null || pkg-config --exists mysqlclient 2>/dev/null \
	    || echo "$$DATABASE_URL" | grep -q '^mysql'; then $(PIP) install -r requirements-mysql.txt; \
	 else echo "MariaDB client headers not found: skipping mysqlclient (SQLite only)."; fi
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_admin
	$(PY) manage.py serve

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install-test
	$(PIP) install -r requirements-bench.txt
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) data .pytest_cache
