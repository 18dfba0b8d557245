"""``python -m benchmark fit|validate|test``: LightningCLI with stacked YAML configs.

A run is described by stacked fragments (later ones override earlier ones)::

    python -m benchmark fit \\
        --config benchmark/configs/trainer.yaml \\
        --config benchmark/configs/imagenet/data.yaml \\
        --config benchmark/configs/imagenet/model.yaml \\
        --config benchmark/configs/imagenet/clipped_sstm.yaml \\
        --data.data_dir /datasets/imagenet100

Besides Lightning's own options there are:

- ``--run.dir``: where the run writes (``config.yaml``, ``metrics.csv``, ``wandb/``,
  ``checkpoints/``, ``final.json``, ``final_weights.pt``); default
  ``runs/<dataset>/<optimizer>/seed<seed>``.
- ``--run.wandb``: ``auto`` (online with credentials and network, else offline),
  ``online``, ``offline`` or ``disabled``; ``--run.wandb_project``.
- ``--optimizer_stats.*``, ``--run_summary.*`` and ``--evaluation_point.*``: the
  always-on callbacks (with ``rng_state`` and ``slurm_requeue``, which checkpoints and
  requeues a SLURM job on ``SIGUSR1``, DDP-safely; Lightning's own auto-requeue is
  switched off). ``--evaluation_point.evaluate_at parameters`` validates and exports the
  raw parameters instead of the optimizer's evaluation point;
  ``--evaluation_point.recompute_bn false`` keeps the live BatchNorm statistics there.

The optimizer is chosen through the registry: ``--model.init_args.optimizer NAME`` and
``--model.init_args.optimizer_args '{lr: 0.1}'`` (or ``--model.init_args.optimizer_args.lr 0.1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.plugins.environments import SLURMEnvironment

from models.base import TaskModule
from optim import get_optimizer_spec
from optim.base import ClippedOptimizer

from .callbacks import (
    EvaluationPointCallback,
    OptimizerStatsCallback,
    RNGStateCallback,
    RunSummaryCallback,
    SlurmRequeueCallback,
)
from .callbacks.run_summary import dataset_name
from .tasks import run_directory
from .tracking import WANDB_MODES, make_loggers

__all__ = ["ClipbenchCLI", "default_run_dir"]


def default_run_dir(dataset: str, optimizer: str, seed: Any) -> Path:
    return run_directory("runs", dataset, optimizer, seed)


class ClipbenchCLI(LightningCLI):
    """LightningCLI over every task module and DataModule, with the suite's defaults."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=TaskModule,
            subclass_mode_model=True,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},  # a requeued run reuses its directory
            parser_kwargs={"prog": "python -m benchmark", "description": __doc__.split("\n\n")[0]},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run.dir", type=str | None, default=None, help="output directory of the run (default: runs/<dataset>/<optimizer>/seed<seed>)")
        parser.add_argument("--run.wandb", type=str, default="auto", help=f"Weights & Biases mode: one of {', '.join(WANDB_MODES)}")
        parser.add_argument("--run.wandb_project", type=str, default="clipbench", help="W&B project")
        parser.add_lightning_class_args(OptimizerStatsCallback, "optimizer_stats")
        parser.add_lightning_class_args(RunSummaryCallback, "run_summary")
        parser.add_lightning_class_args(EvaluationPointCallback, "evaluation_point")
        parser.add_lightning_class_args(RNGStateCallback, "rng_state")
        parser.add_lightning_class_args(SlurmRequeueCallback, "slurm_requeue")
        # Same seed -> same initial weights and data order, whichever optimizer is trained.
        parser.link_arguments("seed_everything", "model.init_args.init_seed")
        parser.link_arguments("seed_everything", "data.init_args.seed")

    def _config(self):
        """This invocation's config (no subcommand level with ``run=False``)."""
        return self.config[self.subcommand] if self.subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._config()
        wandb_mode = config.run.wandb
        if wandb_mode not in WANDB_MODES:
            self.parser.error(f"Invalid --run.wandb: {wandb_mode!r} (must be one of {', '.join(WANDB_MODES)})")
        clip_val = config.trainer.get("gradient_clip_val")
        name = config.model.init_args.get("optimizer", "sgd")
        try:
            spec = get_optimizer_spec(name)
        except ValueError as err:
            self.parser.error(str(err))
        if clip_val and issubclass(spec.resolve(), ClippedOptimizer):
            self.parser.error(
                f"Double clipping: trainer.gradient_clip_val={clip_val} and optimizer {spec.name!r} both "
                "clip the gradient. Remove trainer.gradient_clip_val (the optimizer's clip_level sets the "
                "clipping), or choose an optimizer that does not clip."
            )

    def _config_dict(self) -> dict[str, Any]:
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        return dumped.get(self.subcommand, {}) if self.subcommand else dumped

    def before_fit(self) -> None:
        """``--ckpt_path last`` also considers SLURM's requeue checkpoints.

        Lightning loads ``hpc_ckpt_<n>.ckpt`` (written when SLURM signals a preemption)
        only when ``ckpt_path`` is None, and ``last`` would skip it. Here the newest of the
        run's ``last.ckpt`` and its hpc checkpoints wins, so the same command serves a first
        launch (nothing to resume: a fresh start), a resume and a requeued job.
        """
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        root = Path(self.trainer.default_root_dir)
        candidates = list(root.glob("hpc_ckpt_*.ckpt")) + list((root / "checkpoints").glob("last*.ckpt"))
        candidates = [p for p in candidates if p.exists()]  # a dangling last.ckpt link is no checkpoint
        if candidates:
            config["ckpt_path"] = str(max(candidates, key=lambda p: p.stat().st_mtime))

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        config = self._config()
        dataset = dataset_name(self.datamodule)
        run_dir = Path(config.run.dir or default_run_dir(dataset, self.model.optimizer_name, config.seed_everything))
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("default_root_dir") is None:
            kwargs["default_root_dir"] = str(run_dir)
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = make_loggers(
                Path(kwargs.get("default_root_dir", run_dir)),
                mode=config.run.wandb,
                project=config.run.wandb_project,
                group=dataset,
                name=f"{self.model.optimizer_name}-seed{config.seed_everything}",
                tags=[dataset, self.model.task, self.model.optimizer_name],
                # The whole CLI config (trainer settings included): the W&B run reproduces it.
                config={"cli": self._config_dict()},
            )
        if trainer_config.get("plugins") is None and SLURMEnvironment.detect():
            # Requeue on SIGUSR1 through SlurmRequeueCallback: Lightning's own auto-requeue
            # checkpoints inside the signal handler and can deadlock DDP ranks.
            kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
        trainer = super().instantiate_trainer(**kwargs)
        # Checkpoints in one fixed place, whatever the loggers' versions: `--ckpt_path last`
        # and a requeued job must find them.
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "dirpath", None) is None:
                callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        return trainer


def main(argv: list[str]) -> int:
    """Run ``fit``/``validate``/``test`` (``argv[0]``) through :class:`ClipbenchCLI`."""
    import sys

    # Given the process's own arguments, let Lightning read sys.argv itself: its DDP
    # launcher re-runs exactly that command line in the worker processes.
    ClipbenchCLI(args=None if argv == sys.argv[1:] else argv)
    return 0
