"""Validate, test and export at the optimizer's evaluation point: a callback in the manner
of Lightning's ``WeightAveraging``.

Clipped-SSTM's theory evaluates y, averaged clipped-SGD's x̄, while the parameters hold x.
Around each validation/test epoch the callback copies the evaluation point into the
parameters, recomputes the BatchNorm running statistics there (x's statistics do not
describe y's activations), and afterwards puts the live parameters and statistics back
bit-exactly, on every exit path. Checkpoints hold the evaluation point in
``state_dict`` (what validate/test/inference load and what is deployed) and the live
state under :data:`LIVE_STATE_KEY` (what a resumed fit continues from).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from optim.evaluation import evaluation_point_pairs

from .batch_norm import (
    FixedTrainingBatches,
    batch_norm_buffers,
    batch_norm_layers,
    recompute_batch_norm,
)

__all__ = ["EVALUATE_AT", "LIVE_STATE_KEY", "EvaluationPointCallback", "find_evaluation_point_callback"]

EVALUATE_AT = ("evaluation_point", "parameters")
#: checkpoint key of the live (training) state dict; the name predates this callback
LIVE_STATE_KEY = "clipbench_live_state_dict"


class EvaluationPointCallback(pl.Callback):
    """Evaluate at the optimizer's evaluation point, with BatchNorm statistics of that point.

    Validation inside ``fit`` (the sanity check too) and ``validate``/``test`` of the
    fitted module without ``ckpt_path`` run at the evaluation point; ``validate``/
    ``test`` with ``ckpt_path`` evaluate what the checkpoint's ``state_dict`` holds (the
    evaluation point it was saved at), whatever optimizers the trainer still has. Only
    the module's own parameters are swapped. Logs ``<stage>/evaluate_at_evaluation_point``
    (1: the evaluation point, which differs from the parameters; 0: the parameters) and
    ``<stage>/bn_recomputed``.

    Args:
        evaluate_at: ``evaluation_point`` (default; for SGD and Adam it is the
            parameters) or ``parameters`` (the raw parameters x).
        recompute_bn: recompute the BatchNorm running statistics at the evaluation point
            (only when it differs from the parameters and the model has BatchNorm).
        bn_batches: training batches per recomputation; the same batches every time.
        bn_seed: seed of those batches (their order and augmentations).

    Raises:
        ValueError: an invalid ``evaluate_at`` or ``bn_batches`` < 1.

    References:
        Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
        Generalization", UAI 2018 (recomputing BatchNorm statistics at averaged weights);
        ``torch.optim.swa_utils.update_bn``; ``pytorch_lightning.callbacks.WeightAveraging``.
    """

    def __init__(
        self, evaluate_at: str = "evaluation_point", recompute_bn: bool = True, bn_batches: int = 16, bn_seed: int = 0
    ) -> None:
        if evaluate_at not in EVALUATE_AT:
            raise ValueError(f"Invalid evaluate_at: {evaluate_at!r} (must be one of {', '.join(EVALUATE_AT)})")
        if int(bn_batches) < 1:
            raise ValueError(f"Invalid bn_batches: {bn_batches} (must be >= 1)")
        self.evaluate_at = evaluate_at
        self.recompute_bn = recompute_bn
        self.bn_batches = int(bn_batches)
        self.bn_seed = int(bn_seed)
        #: whether the last evaluation (or export) used recomputed BatchNorm statistics
        self.bn_recomputed = False
        self._backup: list[tuple[Tensor, Tensor]] | None = None  # live values while swapped in
        self._cached_bn: tuple[Any, list[Tensor]] | None = None  # (key, statistics at that point)
        self._batches: tuple[int, FixedTrainingBatches] | None = None
        self._of_the_fit = False

    # -- the swap ----------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while the module holds the evaluation point."""
        return self._backup is not None

    def differs(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Whether evaluating means other weights than the module's parameters."""
        return bool(self._pairs(trainer, pl_module))

    def _pairs(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[tuple[Tensor, Tensor]]:
        if self.evaluate_at != "evaluation_point" or not trainer.optimizers:
            return []
        own = {id(p) for p in pl_module.parameters()}
        return [(p, e) for p, e in evaluation_point_pairs(trainer.optimizers) if id(p) in own]

    @torch.no_grad()
    def swap_in(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> bool:
        """Put the evaluation point (and its BatchNorm statistics) into the module.

        Returns:
            False (and nothing changed) when the evaluation point is the parameters.
        """
        if self._backup is not None:
            raise RuntimeError("EvaluationPointCallback.swap_in called twice without swap_out")
        pairs = self._pairs(trainer, pl_module)
        self.bn_recomputed = False
        if not pairs:
            return False
        layers = batch_norm_layers(pl_module) if self.recompute_bn else []
        tensors = [p for p, _ in pairs] + batch_norm_buffers(layers)
        self._backup = [(t, t.detach().clone(memory_format=torch.preserve_format)) for t in tensors]
        try:
            for p, e in pairs:
                p.copy_(e)
            if layers:
                self.bn_recomputed = self._set_batch_norm(trainer, pl_module, layers)
        except BaseException:
            self.swap_out()
            raise
        return True

    @torch.no_grad()
    def swap_out(self) -> None:
        """Put the live parameters and BatchNorm statistics back, bit-exactly (no-op when not swapped in)."""
        if self._backup is None:
            return
        for tensor, saved in self._backup:
            tensor.copy_(saved)
        self._backup = None

    def _set_batch_norm(self, trainer: pl.Trainer, pl_module: pl.LightningModule, layers: list) -> bool:
        # The statistics depend on the evaluation point only, which changes with optimizer
        # steps: a checkpoint or export right after a validation reuses that validation's.
        key = (trainer.global_step, tuple(id(o) for o in trainer.optimizers))
        buffers = batch_norm_buffers(layers)
        if self._cached_bn is not None and self._cached_bn[0] == key:
            for buffer, value in zip(buffers, self._cached_bn[1]):
                buffer.copy_(value)
            return True
        batches = self._training_batches(trainer)
        if batches is None:
            return False
        recompute_batch_norm(trainer, pl_module, batches)
        self._cached_bn = (key, [b.detach().clone() for b in buffers])
        return True

    def _training_batches(self, trainer: pl.Trainer) -> FixedTrainingBatches | None:
        loader = trainer.train_dataloader
        if loader is None:
            rank_zero_warn(
                "EvaluationPointCallback: no training loader to recompute the BatchNorm statistics at the evaluation "
                "point from (validate/test outside fit); the live statistics are used."
            )
            return None
        if self._batches is None or self._batches[0] != id(loader):
            batches = FixedTrainingBatches(loader, self.bn_batches, self.bn_seed, trainer.global_rank, trainer.world_size)
            self._batches = (id(loader), batches)
        return self._batches[1]

    def evaluation_state_dict(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        """A copy of the module's state dict at the evaluation point (what exports and
        checkpoints hold); the live state is left as it was."""
        swapped = not self.active and self.swap_in(trainer, pl_module)
        try:
            return {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        finally:
            if swapped:
                self.swap_out()

    def _live_state_dict(self, pl_module: pl.LightningModule) -> dict[str, Tensor]:
        saved = {id(t): s for t, s in self._backup or []}
        return {k: saved.get(id(v), v).detach().clone() for k, v in pl_module.state_dict(keep_vars=True).items()}

    # -- hooks -------------------------------------------------------------------------

    def _evaluates_the_fit(self, trainer: pl.Trainer) -> bool:
        # validate/test with ckpt_path loaded the checkpoint's evaluation point already;
        # the optimizers a finished fit left on the trainer must not overwrite it.
        return trainer.state.fn == "fit" or trainer.ckpt_path is None

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bn_recomputed = False
        self._of_the_fit = self._evaluates_the_fit(trainer)
        if self._of_the_fit:
            self.swap_in(trainer, pl_module)

    def _end(self, stage: str, pl_module: pl.LightningModule) -> None:
        # Which weights were evaluated, logged beside the metrics they produced (not for a
        # checkpoint's weights: what they are was decided when it was saved).
        if self._of_the_fit:
            pl_module.log(f"{stage}/evaluate_at_evaluation_point", float(self.active), on_epoch=True)
            pl_module.log(f"{stage}/bn_recomputed", float(self.bn_recomputed), on_epoch=True)
        self.swap_out()

    # Swapped back in *_epoch_end, before ModelCheckpoint saves in on_validation_end.
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("val", pl_module)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end("test", pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.swap_out()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.swap_out()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Like WeightAveraging: `state_dict` holds the weights to evaluate and deploy; the
        # live state, which a resumed run continues from, goes alongside.
        if self.active:  # saved mid-evaluation (e.g. on an exception)
            checkpoint["state_dict"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            checkpoint[LIVE_STATE_KEY] = self._live_state_dict(pl_module)
        elif self.differs(trainer, pl_module):
            checkpoint[LIVE_STATE_KEY] = checkpoint["state_dict"]
            checkpoint["state_dict"] = self.evaluation_state_dict(trainer, pl_module)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Called after the module loaded `state_dict` (the evaluation point): a resumed fit
        # continues from the live state; validate/test/inference keep the evaluation point.
        self._cached_bn = None
        if trainer.state.fn == "fit" and LIVE_STATE_KEY in checkpoint:
            pl_module.load_state_dict(checkpoint[LIVE_STATE_KEY], strict=pl_module.strict_loading)


def find_evaluation_point_callback(trainer: pl.Trainer) -> EvaluationPointCallback | None:
    """The trainer's :class:`EvaluationPointCallback`, or None (then the parameters are evaluated)."""
    return next((c for c in trainer.callbacks if isinstance(c, EvaluationPointCallback)), None)
