"""What every task module shares: the optimizer from the registry, parameter groups,
LR schedules, the loss and metric logging of the evaluation stages.

Where validation and export evaluate (the optimizer's evaluation point, with BatchNorm
statistics recomputed there) is not the module's business: the runner's
``benchmark.callbacks.EvaluationPointCallback`` swaps the weights around evaluation and
in checkpoints."""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from optim import build_optimizer, get_optimizer_spec
from optim.base import ClippedOptimizer

__all__ = ["LR_SCHEDULERS", "TaskModule", "parameter_groups"]

LR_SCHEDULERS = ("constant", "cosine", "poly", "step")


def parameter_groups(net: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
    """Two groups: weights with ``weight_decay``, and biases/norm/embedding parameters without.

    Biases and normalisation scales (every parameter with ndim ≤ 1) are not decayed, as in
    most ImageNet recipes, nor are embedding tables (``nn.Embedding`` weights, also when
    tied to an output layer), as in GPT-2-style recipes (nanoGPT, Hugging Face):
    decay would pull rarely seen tokens' rows to zero. ``decay_norm_and_bias=True``
    decays everything (one group).
    """
    params = [p for p in net.parameters() if p.requires_grad]
    if decay_norm_and_bias or not weight_decay:
        return [{"params": params, "weight_decay": weight_decay}]
    embeddings = {id(m.weight) for m in net.modules() if isinstance(m, nn.Embedding)}
    exempt = [p.ndim <= 1 or id(p) in embeddings for p in params]
    decay = [p for p, skip in zip(params, exempt) if not skip]
    no_decay = [p for p, skip in zip(params, exempt) if skip]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _check_removed_eval_at(value: str | None) -> None:
    """``eval_at`` moved to the evaluation-point callback's ``evaluate_at``."""
    if value is None:
        return
    where = f"evaluation_point: {{evaluate_at: {value}}} in the config, or --evaluation_point.evaluate_at {value}"
    if value != "evaluation_point":
        raise ValueError(
            f"Invalid eval_at: {value!r}: model.init_args.eval_at was removed; the evaluation point is chosen by "
            f"benchmark.callbacks.EvaluationPointCallback(evaluate_at=...) ({where})"
        )
    warnings.warn(
        "model.init_args.eval_at is deprecated and ignored (it was the default, evaluation_point); "
        f"the evaluation point is set by EvaluationPointCallback ({where})",
        DeprecationWarning,
        stacklevel=3,
    )


class TaskModule(pl.LightningModule):
    """Base of the task modules: subclasses build ``self.net`` and implement ``_shared_step``.

    Args:
        optimizer: a name from ``optim.list_optimizers()`` (the registry; a plugin's name
            works too).
        optimizer_args: keyword arguments for it, over the registry's defaults; unknown
            keywords raise at construction, naming the keyword.
        lr_scheduler: ``constant`` (default), ``cosine`` or ``poly`` (per step, over the
            whole run, optional ``warmup_steps``), or ``step`` (per epoch: ``step_size``,
            ``gamma``).
        lr_scheduler_args: keyword arguments of the schedule.
        decay_norm_and_bias: also apply weight decay to biases, norm parameters and
            embedding tables.
        eval_at: removed: where validation evaluates is the ``evaluate_at`` of the
            runner's ``EvaluationPointCallback`` (CLI ``--evaluation_point.evaluate_at``).
            Only the old default ``evaluation_point`` is still accepted (checkpoints made
            before keep loading), with a warning; ``parameters`` raises.
        channels_last: convert the network and the inputs to channels_last.
        compile: run the network through ``torch.compile``.
        init_seed: seed of the initial weights (the CLI links it to ``seed_everything``),
            so every optimizer starts from the same point for a given seed.
    """

    task: str = ""
    #: the metric the benchmark table reports (its direction: ``benchmark.tasks``)
    primary_metric: str = ""

    def __init__(
        self,
        optimizer: str = "sgd",
        optimizer_args: dict[str, Any] | None = None,
        lr_scheduler: str = "constant",
        lr_scheduler_args: dict[str, Any] | None = None,
        decay_norm_and_bias: bool = False,
        eval_at: str | None = None,
        channels_last: bool = False,
        compile: bool = False,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        spec = get_optimizer_spec(optimizer)  # unknown name -> ValueError listing the valid ones
        unknown = sorted(set(optimizer_args or {}) - set(spec.accepted_keywords()))
        if unknown:
            raise ValueError(
                f"Unknown keyword(s) {', '.join(map(repr, unknown))} in optimizer_args for optimizer "
                f"{spec.name!r}; accepted: {', '.join(spec.accepted_keywords())}"
            )
        _check_removed_eval_at(eval_at)
        if lr_scheduler not in LR_SCHEDULERS:
            raise ValueError(f"Invalid lr_scheduler: {lr_scheduler!r} (must be one of {', '.join(LR_SCHEDULERS)})")
        self.optimizer_name = spec.name
        self.optimizer_args = dict(optimizer_args or {})
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_args = dict(lr_scheduler_args or {})
        self.decay_norm_and_bias = decay_norm_and_bias
        self.channels_last = channels_last
        self.compile = compile
        self.init_seed = init_seed
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self._compiled: list[nn.Module] = []  # a list, so it is not registered as a submodule

    # -- the network -----------------------------------------------------------------

    def _init_net(self, build) -> nn.Module:
        """Build the network under ``init_seed`` without touching the global RNG stream."""
        if self.init_seed is None:
            return build()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            return build()

    def configure_model(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile and not self._compiled:
            self._compiled.append(torch.compile(self.net))

    def forward(self, x: Tensor) -> Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        net = self._compiled[0] if self._compiled else self.net
        return net(x)

    # -- steps -----------------------------------------------------------------------

    def _shared_step(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, predictions, targets)`` of a batch."""
        raise NotImplementedError

    def _update_metrics(self, stage: str, preds: Tensor, targets: Tensor, batch: Any) -> None:
        """Update and log this stage's torchmetrics (logged as objects: Lightning computes
        and resets them at epoch end, with DDP sync)."""
        raise NotImplementedError

    def compute_loss(self, batch: Any) -> Tensor:
        """The training loss of a batch, nothing logged (used by the gradient-noise probe)."""
        return self._shared_step(batch)[0]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, preds, targets = self._shared_step(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=targets.shape[0])
        self._update_metrics("train", preds, targets, batch)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step("test", batch)

    def _eval_step(self, stage: str, batch: Any) -> None:
        loss, preds, targets = self._shared_step(batch)
        # A MeanMetric weighted by batch size: under DDP it sums across ranks, so ranks
        # with different sample counts still give the exact dataset mean.
        mean = self.val_loss if stage == "val" else self.test_loss
        mean.update(loss.detach(), weight=targets.shape[0])
        self.log(f"{stage}/loss", mean, on_epoch=True)
        self._update_metrics(stage, preds, targets, batch)

    # -- optimizer -------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        spec = get_optimizer_spec(self.optimizer_name)
        args = {**spec.defaults, **self.optimizer_args}
        groups = parameter_groups(self.net, args.pop("weight_decay", 0.0), self.decay_norm_and_bias)
        optimizer = build_optimizer(self.optimizer_name, groups, **args)
        scheduler = self._build_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def _build_scheduler(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        args = dict(self.lr_scheduler_args)
        kind = self.lr_scheduler
        if kind == "constant":
            if args:
                raise ValueError(f"lr_scheduler 'constant' takes no lr_scheduler_args, got {sorted(args)}")
            return None
        if kind == "step":
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.pop("step_size", 30), gamma=args.pop("gamma", 0.1))
            interval = "epoch"
        else:
            total = int(self.trainer.estimated_stepping_batches)
            warmup = int(args.pop("warmup_steps", 0))
            power = float(args.pop("power", 0.9))
            min_factor = float(args.pop("min_factor", 0.0))

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                t = min(1.0, (step - warmup) / max(1, total - warmup))
                shape = 0.5 * (1 + math.cos(math.pi * t)) if kind == "cosine" else (1 - t) ** power
                return min_factor + (1 - min_factor) * shape

            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
            interval = "step"
        if args:
            raise ValueError(f"Unknown lr_scheduler_args for {kind!r}: {sorted(args)}")
        return {"scheduler": scheduler, "interval": interval}

    def on_fit_start(self) -> None:
        clip_val = self.trainer.gradient_clip_val
        if clip_val is not None and clip_val > 0:
            clipping = [o for o in self.trainer.optimizers if isinstance(o, ClippedOptimizer)]
            if clipping:
                raise ValueError(
                    f"Double clipping: trainer.gradient_clip_val={clip_val} clips the gradient before "
                    f"{type(clipping[0]).__name__} clips it again. Remove gradient_clip_val from the trainer "
                    "config (the optimizer's clip_level controls clipping), or use an unclipped optimizer."
                )
