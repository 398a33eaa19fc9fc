# Two commands for a fresh machine:
#   make demo   - create .venv, install, run the corrected binning study (examples/binning/corrected.yaml), print the result, write outputs
#   make test   - create .venv, install, run the whole test suite
# Also:
#   make test-fast          - the suite without the cases marked slow (-m "not slow")
#   make test-optuna-oldest - core + architecture tests against the oldest Optuna pyproject allows
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sigtune-installed

# The lower bound of optuna in pyproject.toml; test-optuna-oldest runs against exactly this.
OPTUNA_OLDEST ?= $(shell sed -n 's/^ *"optuna>=\([0-9.]*\)".*/\1/p' pyproject.toml)
OLDEST_VENV ?= .venv-optuna-oldest
# Test processes (pytest-xdist). The tests that start Ray run one after the other in one process
# (tests/conftest.py), the other takes the rest; both keep CI's two cores busy, also while a test
# waits on a subprocess or a server. Three were no faster next to two busy loops (910 s against
# 879 and 965 s) and crowded Ray's start. PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadgroup

.PHONY: install demo test test-fast test-optuna-oldest lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,ml,hep,report,tracking]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/sigtune run examples/binning/corrected.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# A venv that sees .venv's packages (a .pth file) but has its own optuna==$(OPTUNA_OLDEST) first.
test-optuna-oldest: $(STAMP)
	$(PYTHON) -m venv $(OLDEST_VENV)
	# An "import" line in a .pth runs site.addsitedir, which (unlike a plain path line) also processes
	# the .pth files in .venv's site-packages: the editable install of sigtune is one of them.
	$(BIN)/python -c 'import site; print("import site; site.addsitedir(%r)" % site.getsitepackages()[0])' > \
	  "$$($(OLDEST_VENV)/bin/python -c 'import site; print(site.getsitepackages()[0])')/_sigtune_base.pth"
	$(OLDEST_VENV)/bin/pip install --quiet --no-deps "optuna==$(OPTUNA_OLDEST)"
	$(OLDEST_VENV)/bin/python -c 'import optuna; from packaging.version import Version as V; \
	  assert V(optuna.__version__) == V("$(OPTUNA_OLDEST)"), optuna.__version__'
	$(OLDEST_VENV)/bin/python -m pytest -q $(XDIST) -m "not slow" tests/core tests/architecture

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(OLDEST_VENV) runs .pytest_cache
