# clipbench: the user's interface. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
STAMP   := $(VENV)/.installed
# torch is pinned here, not in setup.cfg: these releases install from this machine's disk.
TORCH   ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

# Offline-safe defaults for every target: W&B never blocks, albumentations never phones home.
export WANDB_ERROR_REPORTING ?= false
export WANDB_SILENT ?= true
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: help install test clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv/ and install clipbench (editable) with its dev extras

test: $(STAMP) ## run the test suite (the command CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove generated data, results and logs (keeps .venv/)
	rm -rf data/embedded results lightning_logs wandb .pytest_cache
