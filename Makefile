# Fresh machine: `make demo` (runs the main job on the bundled demo sample) and `make test`.
# Both create .venv and install what they need; nothing is downloaded at run time.
# `make docs` builds the manual (site/) with mkdocs --strict; `make docs-examples` reruns the
# documented commands and writes their real output into README.md and docs/*.md.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-all install-docs docs docs-examples bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"

install-all: $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,baselines,plots,browser,docs]"

install-docs: $(BIN)/python
	$(BIN)/pip install -q -e ".[docs]"

docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

docs-examples: install-all
	$(BIN)/python docs/gen_examples.py

demo: install
	$(BIN)/grdkit build g-refcocog --out demo_out/g-refcocog
	$(BIN)/grdkit stats demo_out/g-refcocog

test: install-all
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf $(VENV) demo_out site .pytest_cache
