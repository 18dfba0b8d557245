"""Run metadata for the loggers, and the run's final record: ``final.json`` + weights."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from optim import get_optimizer_spec
from optim.base import ClippedOptimizer

from .evaluation_point import find_evaluation_point_callback
from ..tasks import task_of_datamodule

__all__ = ["RunSummaryCallback", "dataset_name", "run_metadata"]

FINAL_FILE = "final.json"
WEIGHTS_FILE = "final_weights.pt"


def _versions() -> dict[str, str]:
    import pytorch_lightning
    import torchmetrics

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
    }


def _device(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    if root.type == "cuda":
        return f"{torch.cuda.get_device_name(root)} x{trainer.num_devices * trainer.num_nodes}"
    return f"cpu ({platform.processor() or platform.machine()}) x{trainer.num_devices * trainer.num_nodes}"


def dataset_name(datamodule: Any) -> str | None:
    """The dataset's short name (``imagenet``, ``voc``, ``div2k``, ``text``) for run names
    and reports: its entry in the task table (``benchmark.tasks``), else the DataModule's
    embedded dataset or class name."""
    if datamodule is None:
        return None
    task = task_of_datamodule(datamodule)
    if task is not None:
        return task.name
    spec = getattr(datamodule, "embedded", None)
    return getattr(spec, "name", None) or type(datamodule).__name__.lower().removesuffix("datamodule")


def run_metadata(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """What the run config must carry besides the module's own hyperparameters."""
    spec = get_optimizer_spec(pl_module.optimizer_name)
    datamodule = trainer.datamodule
    return {
        "task": pl_module.task,
        "arch": pl_module.hparams.get("arch"),
        "arch_args": pl_module.hparams.get("arch_args"),
        "dataset": dataset_name(datamodule),
        "optimizer": spec.name,
        "optimizer_hparams": {**spec.defaults, **pl_module.optimizer_args},
        "optimizer_defaults_source": spec.source,
        "seed": pl_module.init_seed,
        # Without the callback nothing swaps: the parameters are evaluated.
        "evaluate_at": getattr(find_evaluation_point_callback(trainer), "evaluate_at", "parameters"),
        "precision": str(trainer.precision),
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "batch_size": getattr(datamodule, "batch_size", None),
        "world_size": trainer.world_size,
        "device": _device(trainer),
        "versions": _versions(),
    }


class RunSummaryCallback(pl.Callback):
    """Log the run metadata at fit start; at fit end write ``final.json`` and export the
    weights at the optimizer's evaluation point (``final_weights.pt``) into the run
    directory (``trainer.default_root_dir``).

    Every validation during fit appends ``{step, seconds, value}`` (global step, wall-clock
    seconds since the fit began, the primary metric) to ``val_history`` in ``final.json``,
    the record time-to-target is read from (:mod:`benchmark.profiles`). The history and
    the elapsed time travel in checkpoints, so a resumed run continues both.

    Args:
        export_weights: save ``final_weights.pt`` (the module's state dict at the
            evaluation point with the BatchNorm statistics recomputed there, as the
            trainer's :class:`~benchmark.callbacks.EvaluationPointCallback` sets; the
            parameters without one). ``final.json`` records ``evaluate_at`` and
            ``bn_recomputed`` (whether those weights carry recomputed statistics; with
            ``export_weights=False``, whether the last evaluation did).
    """

    def __init__(self, export_weights: bool = True) -> None:
        self.export_weights = export_weights
        self._start = time.monotonic()
        self._offset = 0.0  # seconds elapsed before this process resumed the run
        self._history: list[dict[str, float | int | None]] = []

    def _elapsed(self) -> float:
        return self._offset + time.monotonic() - self._start

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        value = trainer.callback_metrics.get(pl_module.primary_metric)
        self._history.append(
            {
                "step": int(trainer.global_step),
                "seconds": round(self._elapsed(), 3),
                "value": float(value) if value is not None else None,
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {"val_history": [dict(h) for h in self._history], "elapsed_seconds": self._elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = [dict(h) for h in state_dict.get("val_history", [])]
        self._offset = float(state_dict.get("elapsed_seconds", 0.0))
        self._start = time.monotonic()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            metadata = run_metadata(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_hyperparams(metadata)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every rank takes part in building the state dict; rank 0 writes.
        evaluation = find_evaluation_point_callback(trainer)
        state = None
        if self.export_weights:
            if evaluation is not None:
                state = evaluation.evaluation_state_dict(trainer, pl_module)
            else:
                state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        bn_recomputed = evaluation is not None and evaluation.bn_recomputed
        agree = self._hparams_agree(trainer)
        self._write(trainer, pl_module, state, bn_recomputed, agree)

    @staticmethod
    def _hparams_agree(trainer: pl.Trainer) -> bool:
        """Whether every rank trained with the same optimizer hyperparameters (a sweep
        whose values reached rank 0 only would show here as False)."""
        mine = [
            {k: v for k, v in group.items() if k != "params"} for o in trainer.optimizers for group in o.param_groups
        ]
        if trainer.world_size == 1 or not torch.distributed.is_initialized():
            return True
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, repr(mine))
        return all(g == gathered[0] for g in gathered)

    @rank_zero_only
    def _write(self, trainer, pl_module, state, bn_recomputed: bool, hparams_agree: bool) -> None:
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        stats = {}
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, ClippedOptimizer):
                stats = {k: float(v) for k, v in optimizer.step_stats().items()}
        record = {
            **run_metadata(trainer, pl_module),
            "bn_recomputed": bn_recomputed,
            "hparams_identical_across_ranks": hparams_agree,
            "primary_metric": pl_module.primary_metric,
            "metrics": metrics,
            "optimizer_stats": stats,
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "train_seconds": round(time.monotonic() - self._start, 2),
            "val_history": self._history,
            "weights": WEIGHTS_FILE if state is not None else None,
        }
        if state is not None:
            _atomic(run_dir / WEIGHTS_FILE, lambda p: torch.save(state, p))
        _atomic(run_dir / FINAL_FILE, lambda p: p.write_text(json.dumps(record, indent=2, sort_keys=True)))


def _atomic(path: Path, write) -> None:
    """Write to a temporary sibling and rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)
