# Two commands do everything:  `make demo` (set up, simulate the demo inputs, run the workflow)
# and `make test` (set up, run the test suite). Both create .venv on first use.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
CORES ?= 2
# pytest-xdist workers of `make test` (one module per worker at a time: a module's fixtures run once)
TEST_WORKERS ?= 2
# First Python 3.12 or 3.13 found (PATH, then pyenv's installs).
PYTHON ?= $(shell for p in python3.12 python3.13 $(HOME)/.pyenv/versions/3.12*/bin/python3 \
	$(HOME)/.pyenv/versions/3.13*/bin/python3; do $$p -c 'import sys; assert sys.version_info[:2] in ((3,12),(3,13))' \
	2>/dev/null && { echo $$p; break; }; done)

.PHONY: setup demo test lint clean-demo lock-envs

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	@test -n "$(PYTHON)" || { echo "cropflow needs Python 3.12 or 3.13 (set PYTHON=/path/to/python3.12)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/constraints.txt -e ".[test,clouds]"
	touch $@

setup: $(VENV)/.installed

data/demo/.complete: $(VENV)/.installed config/config.yaml config/demo.yaml
	$(VENV)/bin/cropflow simulate --config config/config.yaml config/demo.yaml --out data/demo
	touch $@

demo: data/demo/.complete
	$(VENV)/bin/snakemake --configfile config/demo.yaml --cores $(CORES)
	$(VENV)/bin/snakemake --configfile config/demo.yaml --report results/report.html

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(VENV)/.installed
	$(VENV)/bin/snakemake --lint

# Conda lock files envs/<env>.linux-64.pin.txt (used by --sdm conda before the YAML): snakedeploy creates each
# environment with conda (mamba when installed) from conda-forge and writes its explicit package list, so it
# runs on a user's machine with conda, not in CI.
CONDA_FRONTEND ?= $(shell command -v mamba >/dev/null && echo mamba || echo conda)
lock-envs:
	@command -v $(CONDA_FRONTEND) >/dev/null || { echo "lock-envs needs conda (or mamba) with access to conda-forge on PATH"; exit 1; }
	@command -v snakedeploy >/dev/null || { echo "lock-envs needs snakedeploy: pip install snakedeploy"; exit 1; }
	snakedeploy pin-conda-envs --conda-frontend $(CONDA_FRONTEND) $(sort $(wildcard envs/*.yaml))

clean-demo:
	rm -rf data/demo results logs .snakemake .cropflow
