# Two commands do all the set-up: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install clean

$(BIN)/finegrain: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.13.0 first: the CPU wheel on this machine's disk (a bare `torch` would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/finegrain

demo: install
	$(BIN)/finegrain demo -o demo-output

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo-output
