# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test venv clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installed when setup.cfg changes; the stamp files keep re-runs instant.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: setup.cfg setup.py pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(VENV)/.installed $@

venv: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/kfusion demo

# Test files run in one worker process per core (pytest-xdist); a file's tests stay together so
# its module fixtures are built once.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -n auto --dist loadfile

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
