"""Per-step optimizer statistics: gradient norm, clipping, SSTM's schedule, learning rate."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from optim.base import ClippedOptimizer
from optim.clipping import get_clipping, global_norm

__all__ = ["OptimizerStatsCallback"]


class OptimizerStatsCallback(pl.Callback):
    """Log, at every optimizer step, under ``optim/``:

    - ``grad_norm``: ‖g‖₂ before clipping (for optimizers that do not clip, measured here
      as the clipping optimizers measure it: :meth:`optim.clipping.Clipping.measure`);
    - ``clip_factor`` (‖clip(g)‖/‖g‖ on a clipped step, 1 otherwise), ``clipped_fraction``
      (fraction of applied steps so far on which some tensor or coordinate was scaled)
      and ``skipped_steps`` (non-finite gradients), for clipping optimizers; the
      definitions per clipping kind are those of :mod:`optim.clipping`;
    - ``alpha`` (α_k) and ``clip_threshold`` (λ_k = B/α_k) for clipped-SSTM;
    - ``lr`` of the first parameter group.

    Values are logged as device tensors: Lightning reads them on the host only when it
    writes to the loggers (every ``log_every_n_steps``), so a step costs no sync; on the
    steps in between nothing is computed or logged (Lightning would drop the values).

    Args:
        grad_norm_for_all: also compute the gradient norm for optimizers that do not
            clip (one extra read of the gradients per step).
    """

    def __init__(self, grad_norm_for_all: bool = True) -> None:
        self.grad_norm_for_all = grad_norm_for_all
        self._pending: dict[str, torch.Tensor] = {}

    @staticmethod
    def _reaches_loggers(trainer: pl.Trainer) -> bool:
        # Lightning keeps only the last value logged before it writes to the loggers
        # (every log_every_n_steps); logging on other steps is host work for nothing.
        return bool(getattr(trainer._logger_connector, "should_update_logs", True))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        if isinstance(optimizer, ClippedOptimizer) or not self.grad_norm_for_all or not self._reaches_loggers(trainer):
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            self._pending["grad_norm"] = global_norm(get_clipping("norm").measure(grads)).detach()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == getattr(self, "_logged_step", -1):
            return  # accumulating gradients: no optimizer step happened
        self._logged_step = trainer.global_step
        if not self._reaches_loggers(trainer):
            self._pending.clear()
            return
        stats = dict(self._pending)
        self._pending.clear()
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, ClippedOptimizer):
                stats.update({k: v.detach().clone() for k, v in optimizer.step_stats().items()})
            stats["lr"] = torch.tensor(float(optimizer.param_groups[0]["lr"]))
        for name, value in stats.items():
            pl_module.log(f"optim/{name}", value.float(), on_step=True, on_epoch=False)
