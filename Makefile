# Fresh machine: `make demo` (runs the main job on the bundled demo sample) and `make test`.
# Both create .venv and install what they need; nothing is downloaded at run time.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

install-all: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,baselines,plots,browser]"

demo: install
	$(BIN)/grdkit build g-refcocog --out demo_out/g-refcocog
	$(BIN)/grdkit stats demo_out/g-refcocog

test: install-all
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
