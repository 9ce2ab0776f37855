# sparseprop: `make help` lists the targets. Every target installs what it needs on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
PROFILE ?= quick

.DEFAULT_GOAL := help
.PHONY: help install train test test-full test-slow bench bench-gpu reproduce-figures figures clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,slurm]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install sparseprop with its test tools and the Slurm launcher

train: $(STAMP)  ## run the default experiment (MNIST, MLP-7 tanh, SNIP 90%); extra overrides via ARGS="..."
	$(BIN)/sparseprop train $(ARGS)

test: $(STAMP)  ## fast test suite, one worker per core (under 2 minutes on 2 cores)
	$(BIN)/python -m pytest -q -n auto $(ARGS)

test-slow: $(STAMP)  ## only the slow tests: real MNIST and end-to-end subprocess runs
	$(BIN)/python -m pytest -q -m slow $(ARGS)

test-full: $(STAMP)  ## every test, slow ones included
	$(BIN)/python -m pytest -q -m "slow or not slow" $(ARGS)

bench: $(STAMP)  ## benchmarks: our code against reference implementations, as ratios
	$(BIN)/python scripts/bench_train.py $(ARGS)
	$(BIN)/python scripts/bench_conv.py $(ARGS)
	$(BIN)/python scripts/bench_signal.py $(ARGS)
	$(BIN)/python scripts/bench_sweep.py $(ARGS)
	$(BIN)/python scripts/bench_prune.py $(ARGS)

bench-gpu: $(STAMP)  ## CUDA: training images/s against a bare loop (fp32, bf16 + channels-last), then the CUDA tests
	$(BIN)/python scripts/bench_gpu.py $(ARGS)

reproduce-figures: $(STAMP)  ## run the paper's MNIST experiments (PROFILE=quick|paper), collect, draw
	$(BIN)/python scripts/reproduce.py --profile $(PROFILE) $(ARGS)

figures: $(STAMP)  ## redraw figures and tables from collected results, no training
	$(BIN)/python scripts/reproduce.py --profile $(PROFILE) --figures-only $(ARGS)

clean:  ## remove the virtual environment, caches and run outputs (keeps outputs/.gitkeep)
	rm -rf $(VENV) .pytest_cache build *.egg-info
	find outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
