# The two set-up commands of the README: `make serve` and `make test`. Both create .venv on first use.
VENV ?= .venv
PYTHON ?= python3

.PHONY: serve test lint install

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e clients/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

serve: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(VENV)/bin/darling-reward serve

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check service models clients tests
	$(VENV)/bin/mypy service models clients/python/darling_client

test: $(VENV)/.installed
	VENV=$(VENV) bash scripts/test.sh
