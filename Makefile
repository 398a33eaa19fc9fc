# Two commands for a fresh machine:
#   make demo   - create .venv, install, run the corrected binning study (examples/binning/corrected.yaml), print the result, write outputs
#   make test   - create .venv, install, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sigtune-installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ml,hep,report,tracking]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sigtune run examples/binning/corrected.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runs .pytest_cache
