"""Clipped-SGD (Algorithm 2 of Gorbunov, Danilova & Gasnikov, 2020), with heavy-ball momentum."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .base import ClippedOptimizer, check_choice, check_positive, check_range
from .clipping import CLIPPING_KINDS, clip_coefficient, clip_gradients, clip_ratio, global_norm, host_path, tensor_norms

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

    State (``self.state[p]``):
        ``momentum_buffer``: b (only with μ > 0). ``average``: x̄ (only with ``average``).

    Optimizer state (``self.global_state``): ``step`` (k, applied steps), the counters and
    last-step statistics of :class:`~optim.base.ClippedOptimizer`.

    References:
        Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
        accelerated gradient clipping. NeurIPS 2020, Algorithm 2 (clipped-SGD).
    """

    _global_hparams = ("clip_level", "clipping", "average")

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
    ) -> None:
        defaults = dict(
            lr=lr,
            clip_level=clip_level,
            momentum=momentum,
            weight_decay=weight_decay,
            clipping=clipping,
            average=average,
        )
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite, fused=fused)

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
        loss = self._run_closure(closure)
        collected = self._collect()
        all_grads = [g for _, _, grads in collected for g in grads]
        if not all_grads:
            return loss
        self._init_global_state(all_grads[0].device)
        foreach = self._use_foreach(all_grads)
        fused = self._use_fused(all_grads)
        clip_level, clipping, average = (self._shared(k) for k in self._global_hparams)
        norms, total, applied = self._measure([grads for _, _, grads in collected], foreach)
        gs = self.global_state
        average_weight = None
        if average:
            # x̄ ← x̄ + (xᵏ - x̄)/(k+1); weight 0 on a skipped step.
            count = gs["step"] + applied.to(gs["step"].dtype)
            average_weight = applied.to(count.dtype) / count.clamp(min=1)
        clipped_norms = []
        for (group, params, grads), group_norms in zip(collected, norms):
            if not params:
                continue
            buffers = self._state_list(params, "momentum_buffer") if group["momentum"] else None
            averages = self._state_list(params, "average") if average else None
            clipped_norms.append(
                clipped_sgd(
                    params,
                    grads,
                    buffers,
                    averages,
                    lr=group["lr"],
                    clip_level=clip_level,
                    momentum=group["momentum"],
                    weight_decay=group["weight_decay"],
                    clipping=clipping,
                    norms=group_norms,
                    total_norm=total,
                    applied=applied,
                    average_weight=average_weight,
                    foreach=foreach,
                    fused=fused,
                )
            )
        self._record(total, clip_ratio(clipping, clip_level, total, clipped_norms), applied)
        return loss

    def _state_list(self, params: list[Tensor], key: str) -> list[Tensor]:
        out = []
        for p in params:
            state = self.state[p]
            if key not in state:
                # b starts at 0; x̄ starts at x⁰ (its first update has weight 1 anyway).
                init = torch.zeros_like if key == "momentum_buffer" else torch.clone
                state[key] = init(p, memory_format=torch.preserve_format).detach()
            out.append(state[key])
        return out

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
    clip_level: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clipping: str = "norm",
    norms: list[Tensor] | None = None,
    total_norm: Tensor | None = None,
    applied: Tensor | None = None,
    average_weight: Tensor | None = None,
    foreach: bool = True,
    fused: bool = False,
) -> Tensor | None:
    """Functional clipped-SGD step over one list of tensors (see :class:`ClippedSGD`).

    Args:
        momentum_buffers: b per tensor, required when ``momentum`` > 0.
        averages: x̄ per tensor, updated with ``average_weight`` before x moves.
        norms, total_norm: per-tensor and global pre-clip norms; computed from ``grads``
            when not given (an optimizer with several groups passes the global norm).
        applied: 0-dim bool tensor; False makes the call a no-op (default: the global
            norm is finite).
        average_weight: 1/(k+1) for this step (0 to skip), a 0-dim tensor.
        fused: run :func:`optim.fused.fused_clipped_sgd` (one pass) instead of the
            clip + update kernels; ``foreach`` then only affects the norms.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise``, else None.
    """
    if norms is None:
        norms = tensor_norms(grads, foreach=foreach)
    if total_norm is None:
        total_norm = global_norm(norms)
    if applied is None:
        applied = torch.isfinite(total_norm)
    if momentum and momentum_buffers is None:
        raise ValueError("clipped_sgd: momentum > 0 needs momentum_buffers")
    if averages is not None and average_weight is None:
        raise ValueError("clipped_sgd: averages need an average_weight")
    if fused:
        from .fused import fused_clipped_sgd

        return fused_clipped_sgd(
            params, grads, momentum_buffers, averages, lr=lr, clip_level=clip_level, momentum=momentum,
            weight_decay=weight_decay, clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
            average_weight=average_weight,
        )  # fmt: skip
    kernel = _foreach_clipped_sgd if foreach else _single_tensor_clipped_sgd
    if host_path(clipping, applied, params):
        # CPU: reading a 0-dim tensor costs nothing, so a skipped step returns here and
        # the clip coefficient enters the update as a number: no masked copy of the
        # gradients is made (a fresh copy per step is page faults on a CPU).
        if bool(applied):
            kernel(params, grads, momentum_buffers, averages, lr=lr, momentum=momentum, weight_decay=weight_decay,
                   applied=None, average_weight=average_weight,
                   grad_scale=float(clip_coefficient(total_norm, clip_level)))  # fmt: skip
        return None
    clipped, clipped_norm = clip_gradients(
        grads, clip_level, clipping, norms=norms, total_norm=total_norm, applied=applied, foreach=foreach
    )
    kernel(
        params,
        clipped,
        momentum_buffers,
        averages,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        applied=applied.to(params[0].dtype),
        average_weight=average_weight,
    )
    return clipped_norm


def _single_tensor_clipped_sgd(
    params: list[Tensor],
    clipped: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    averages: list[Tensor] | None,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    applied: Tensor | None,
    average_weight: Tensor | None,
    grad_scale: float | None = None,
) -> None:
    # `clipped` is zero on a skipped step; `applied` (0/1) masks the remaining terms.
    # With `grad_scale` (host path), `clipped` holds the raw gradients, the clipped one is
    # grad_scale·g, and the step is known to be applied.
    for i, (x, d) in enumerate(zip(params, clipped)):
        if averages is not None:
            averages[i].lerp_(x, average_weight.to(x.dtype))
        if grad_scale is not None:
            if momentum:
                b = momentum_buffers[i].mul_(momentum).add_(d, alpha=grad_scale)
                if weight_decay:
                    b.add_(x, alpha=weight_decay)
                x.add_(b, alpha=-lr)
            else:
                if weight_decay:
                    x.mul_(1 - lr * weight_decay)
                x.add_(d, alpha=-lr * grad_scale)
            continue
        if weight_decay:
            d.addcmul_(x, applied, value=weight_decay)
        if momentum:
            b = momentum_buffers[i]
            # μ on an applied step, 1 on a skipped one: b stays as it was.
            b.mul_(1 + applied * (momentum - 1)).add_(d)
            x.addcmul_(b, applied, value=-lr)
        else:
            x.add_(d, alpha=-lr)


def _foreach_clipped_sgd(
    params: list[Tensor],
    clipped: list[Tensor],
    momentum_buffers: list[Tensor] | None,
    averages: list[Tensor] | None,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    applied: Tensor | None,
    average_weight: Tensor | None,
    grad_scale: float | None = None,
) -> None:
    n = len(params)
    if averages is not None:
        torch._foreach_lerp_(averages, params, [average_weight.to(params[0].dtype)] * n)
    if grad_scale is not None:  # as in _single_tensor_clipped_sgd
        if momentum:
            torch._foreach_mul_(momentum_buffers, momentum)
            torch._foreach_add_(momentum_buffers, clipped, alpha=grad_scale)
            if weight_decay:
                torch._foreach_add_(momentum_buffers, params, alpha=weight_decay)
            torch._foreach_add_(params, momentum_buffers, alpha=-lr)
        else:
            if weight_decay:
                torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_add_(params, clipped, alpha=-lr * grad_scale)
        return
    if weight_decay:
        torch._foreach_addcmul_(clipped, params, [applied] * n, value=weight_decay)
    if momentum:
        torch._foreach_mul_(momentum_buffers, 1 + applied * (momentum - 1))
        torch._foreach_add_(momentum_buffers, clipped)
        torch._foreach_addcmul_(params, momentum_buffers, [applied] * n, value=-lr)
    else:
        torch._foreach_add_(params, clipped, alpha=-lr)
