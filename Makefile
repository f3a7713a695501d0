# Fresh machine: `make demo` (runs the main job on the bundled demo sample) and `make test`.
# Both create .venv and install what they need; nothing is downloaded at run time.
# `make docs` builds the manual (site/) with mkdocs --strict; `make docs-examples` reruns the
# documented commands and writes their real output into README.md and docs/*.md.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# A second, small environment with the lowest supported datasets (and its pyarrow and
# huggingface_hub: the lower bounds in pyproject.toml), where tests/test_hf.py runs too.
# numpy<2: pyarrow 14.0.1's wheels fail to import with numpy 2 (numpy.core.multiarray).
HF_MIN      ?= .venv-hf-min
HF_MIN_PINS  = "datasets==2.19.0" "pyarrow==14.0.1" "huggingface_hub==0.21.2" "numpy<2"

.PHONY: demo test test-hf-min install install-all install-docs docs docs-examples bench clean

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

# wheels only; the stamp is written once the install succeeded (a failed one is redone)
$(HF_MIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(HF_MIN)
	$(HF_MIN)/bin/python -m pip install -q --only-binary=:all: $(HF_MIN_PINS) -e ".[dev]"
	touch $@

# the HF tests in the oldest supported datasets first, so the main suite's summary is the last line
test: install-all $(HF_MIN)/.installed
	$(MAKE) test-hf-min
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

# the HF tests in the oldest supported datasets (nothing touches the network)
test-hf-min: $(HF_MIN)/.installed
	GRDKIT_HF_MIN=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(HF_MIN)/bin/python -m pytest -q tests/test_hf.py

bench: install
	$(BIN)/python benchmarks/bench_build.py

clean:
	rm -rf $(VENV) $(HF_MIN) demo_out site .pytest_cache
