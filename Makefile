# Two commands do everything on a fresh machine:
#   make run   - create .venv, install, run every study (quick preset) and write the report
#   make test  - same install, then the test suite
# torch is pinned to the CPU build in the same install; override with e.g. `make test TORCH=torch`.
# pip does not compile the packages' bytecode (most of it is never imported); Python writes it for the
# modules a run imports, once, so the environment's PYTHONDONTWRITEBYTECODE is lifted here.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install run test readme clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

unexport PYTHONDONTWRITEBYTECODE

$(STAMP): $(VENV)/bin/python pyproject.toml
	$(PIP) install --quiet --no-compile "$(TORCH)" -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/learnlab reproduce

test: install
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache

# Rewrite the README's verdict table from the runs of `make run`.
readme: install
	$(VENV)/bin/learnlab report runs --readme README.md
