# Two commands do all the set-up on a machine that has only Python 3.10+:
#   make demo   - create .venv, install, run the main example
#   make test   - create .venv, install with dev extras, run the whole suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is installed first and pinned, so no install ever pulls a CUDA build of several GB.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench bench-gpu clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base pyproject.toml
	$(PIP) install -q -e ".[dev]"
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/trading_signals.py

test: $(VENV)/.dev
	$(PY) -m ruff check hybridopt tests examples benchmarks
	$(PY) -m pytest -q

lint: $(VENV)/.dev
	$(PY) -m ruff check hybridopt tests examples benchmarks
	$(VENV)/bin/hadolint docker/Dockerfile

bench: $(VENV)/.installed
	$(PY) benchmarks/population_eval.py
	$(PY) benchmarks/ray_scaling.py

# On a CUDA machine; a fresh .venv needs a CUDA build of torch, e.g.
#   make bench-gpu TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
bench-gpu: $(VENV)/.installed
	$(PY) benchmarks/population_eval.py --device cuda

clean:
	rm -rf $(VENV) runs .pytest_cache
