"""Clipped-SGD (Algorithm 2 of Gorbunov, Danilova & Gasnikov, 2020), with heavy-ball momentum."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import fused as fused_kernels
from .base import ClippedOptimizer, check_choice, check_positive, check_range
from .clipping import CLIPPING_KINDS
from .kernels import measured, sgd_update

__all__ = ["ClippedSGD", "clipped_sgd"]


class ClippedSGD(ClippedOptimizer):
    r"""Clipped stochastic gradient descent.

    .. code-block:: text

        for k = 0 … N-1:
            g = ∇f(xᵏ, ξᵏ)
            d = clip(g, λ)                       (norm / layer_wise / coordinate_wise)
            b = μ·b + d + w·xᵏ                   (b₀ = 0; μ = w = 0: the paper's algorithm)
            x^{k+1} = xᵏ - γ·b
        output: x̄ᴺ = (1/N) Σ_{k=0}^{N-1} xᵏ      (kept when ``average=True``)

    With ``momentum`` and ``weight_decay`` this equals ``clip_grad_norm_(params, λ)``
    followed by ``torch.optim.SGD(lr=γ, momentum=μ, dampening=0, weight_decay=w)``.
    Deviation from the paper: momentum and weight decay are extensions (both 0 by default).

    Args:
        params: parameters or parameter groups. ``lr``, ``momentum`` and ``weight_decay``
            may differ per group; ``clip_level``, ``clipping`` and ``average`` act on the
            global gradient and must be the same in every group.
        lr: stepsize γ > 0.
        clip_level: clipping level λ > 0 (``inf`` disables clipping).
        momentum: heavy-ball factor μ in [0, 1).
        weight_decay: w ≥ 0, added after clipping.
        clipping: ``"norm"`` (global l2 norm over all groups), ``"layer_wise"`` or
            ``"coordinate_wise"``.
        average: keep the running average x̄ of the iterates; it becomes the
            :meth:`evaluation_point`.
        foreach: use the multi-tensor kernels (None: whenever the tensors allow).
        fused: one Triton kernel per step for the whole update (:mod:`optim.fused`; the
            same results to float rounding). None: whenever every tensor is on CUDA and
            Triton is installed; True elsewhere raises (CPU only under the Triton
            interpreter, for tests).
        nonfinite: ``"skip"`` leaves parameters and state untouched on a non-finite
            gradient norm and counts the step in ``num_skipped_steps``; ``"raise"``
            raises ``FloatingPointError`` (and reads the norm on the host to decide).
        device_path: True runs the accelerator code path (no host reads) on CPU tensors
            too; None: the CPU host path where it applies (see :mod:`optim.kernels`).

    State (``self.state[p]``):
        ``momentum_buffer``: b (only with μ > 0), in the parameter's dtype.
        ``average``: x̄ (only with ``average``), float32 for bf16/fp16 parameters
        (:meth:`evaluation_point` returns it as kept; copying it into the parameters casts).

    Optimizer state (``self.global_state``): ``step`` (k, applied steps), the counters and
    last-step statistics of :class:`~optim.base.ClippedOptimizer`.

    References:
        Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
        accelerated gradient clipping. NeurIPS 2020, Algorithm 2 (clipped-SGD).
    """

    _global_hparams = ("clip_level", "clipping", "average")
    _accumulators = ("average",)

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        clip_level: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        clipping: str = "norm",
        average: bool = False,
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite: str = "skip",
        device_path: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, clip_level=clip_level, momentum=momentum, weight_decay=weight_decay, clipping=clipping,
                        average=average)  # fmt: skip
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite, fused=fused, device_path=device_path)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("lr", group["lr"])
        check_positive("clip_level", group["clip_level"], allow_inf=True)
        check_range("momentum", group["momentum"], 0.0, 1.0 - 1e-12, "[0, 1)")
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"), "[0, inf)")
        check_choice("clipping", group["clipping"], CLIPPING_KINDS)
        if not isinstance(group["average"], bool):
            raise ValueError(f"Invalid average: {group['average']!r} (must be True or False)")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step; ``closure`` (re-evaluating the loss) is optional."""
        loss, inputs = self._start_step(closure)
        if inputs is None:
            return loss
        clip_level, average = inputs.hparams["clip_level"], inputs.hparams["average"]
        gs, applied = self.global_state, inputs.applied
        average_weight = None
        if average:
            # x̄ ← x̄ + (xᵏ - x̄)/(k+1); weight 0 on a skipped step.
            count = gs["step"] + applied.to(gs["step"].dtype)
            average_weight = applied.to(count.dtype) / count.clamp(min=1)
        clipped_norms = []
        for (group, params, grads), norms in zip(inputs.groups, inputs.norms):
            clipped_norms.append(
                clipped_sgd(
                    params,
                    grads,
                    self._state(params, "momentum_buffer", torch.zeros_like) if group["momentum"] else None,
                    self._state(params, "average", torch.clone) if average else None,  # x̄ starts at x⁰
                    lr=group["lr"],
                    clip_threshold=clip_level,
                    momentum=group["momentum"],
                    weight_decay=group["weight_decay"],
                    clipping=inputs.clipping.name,
                    norms=norms,
                    total_norm=inputs.total_norm,
                    applied=applied,
                    average_weight=average_weight,
                    foreach=inputs.foreach,
                    fused=inputs.fused,
                    device_path=self.device_path,
                )
            )
        self._finish_step(inputs, clip_level, clipped_norms)
        return loss

    def evaluation_point(self) -> list[Tensor]:
        """x̄ with ``average=True`` (the parameters before the first step), else x."""
        params = super().evaluation_point()
        if not self.param_groups[0]["average"]:
            return params
        return [self.state[p].get("average", p) for p in params]


def clipped_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    averages: list[Tensor] | None,
    *,
    lr: float,
    clip_threshold: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clipping: str = "norm",
    norms: list[Tensor] | None = None,
    total_norm: Tensor | None = None,
    applied: Tensor | None = None,
    average_weight: Tensor | None = None,
    foreach: bool = True,
    fused: bool = False,
    device_path: bool | None = None,
) -> Tensor | None:
    """Functional clipped-SGD step over one list of tensors (see :class:`ClippedSGD`).

    Args:
        clip_threshold: λ, the clipping level of the step (clipped-SGD's ``clip_level``).
        momentum_buffers: b per tensor, required when ``momentum`` > 0.
        averages: x̄ per tensor, updated with ``average_weight`` before x moves.
        norms, total_norm: per-tensor and global pre-clip norms; computed from ``grads``
            when not given (an optimizer with several groups passes the global norm).
        applied: 0-dim bool tensor; False makes the call a no-op (default: the global
            norm is finite).
        average_weight: 1/(k+1) for this step (0 to skip), a 0-dim tensor.
        fused: run :func:`optim.fused.fused_clipped_sgd` (one pass) instead of the
            kernels of :mod:`optim.kernels`; ``foreach`` then only affects the norms.
        device_path: as in :class:`ClippedSGD`.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise``, else None.

    Raises:
        ValueError: missing momentum buffers or average weight, an unknown clipping kind.
    """
    norms, total_norm, applied = measured(grads, norms, total_norm, applied, foreach)
    if momentum and momentum_buffers is None:
        raise ValueError("clipped_sgd: momentum > 0 needs momentum_buffers")
    if averages is not None and average_weight is None:
        raise ValueError("clipped_sgd: averages need an average_weight")
    update = fused_kernels.fused_clipped_sgd if fused else functools.partial(sgd_update, foreach=foreach)
    return update(
        params, grads, momentum_buffers, averages, lr=lr, clip_threshold=clip_threshold, momentum=momentum,
        weight_decay=weight_decay, clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
        average_weight=average_weight, device_path=device_path,
    )  # fmt: skip
