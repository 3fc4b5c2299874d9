# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-all lint wheel clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ntkdsl demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m ''

lint: $(STAMP)
	$(BIN)/ruff check .

# a wheel in dist/ (it carries examples/specs as ntkdsl/specs, see setup.py)
wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -q -w dist .

clean:
	rm -rf $(VENV) build dist *.egg-info
