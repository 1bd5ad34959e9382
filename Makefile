# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_INSTALL ?= $(VENV)/bin/pip install -q
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint bench clean

# pip -q keeps a minute of download lines off the screen; these lines say what is going on.
$(VENV)/.installed: requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit("meshsite needs Python 3.11+") if sys.version_info < (3, 11) else None'
	@test -x $(PY) || { echo "meshsite: creating the Python environment in $(VENV) (first start only)"; \
	  $(PYTHON) -m venv $(VENV); }
	@echo "meshsite: installing the dependencies into $(VENV) (a minute or two the first time, quiet unless it fails)"
	@$(PIP_INSTALL) --upgrade pip
	@$(PIP_INSTALL) -r requirements-dev.txt
	@touch $@
	@echo "meshsite: dependencies installed"

run: $(VENV)/.installed
	@$(PY) manage.py meshrun --host $(HOST) --port $(PORT)

test: $(VENV)/.installed
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy meshsite messaging visibility

bench: $(VENV)/.installed
	$(PY) bench/rest_throughput.py

clean:
	rm -rf $(VENV) var
