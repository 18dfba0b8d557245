"""Clipped-SSTM (Algorithm 1 of Gorbunov, Danilova & Gasnikov, 2020)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from . import fused as fused_kernels
from .base import ClippedOptimizer, check_choice, check_positive, check_range
from .clipping import CLIPPING_KINDS
from .kernels import measured, sstm_update

__all__ = ["ClippedSSTM", "clipped_sstm", "sstm_schedule"]


class ClippedSSTM(ClippedOptimizer):
    r"""Clipped Stochastic Similar Triangles Method.

    .. code-block:: text

        A₀ = 0,  y⁰ = z⁰ = x⁰,  a = 1/lr
        for k = 0 … N-1:
            α_{k+1} = (k+2)^{2ν/(1+ν)} / (2aL)
            A_{k+1} = A_k + α_{k+1}
            if A_k/A_{k+1} > r:  A_k := α_{k+1}·r/(1-r),  A_{k+1} := α_{k+1}/(1-r)
            λ_{k+1} = B / α_{k+1}
            x^{k+1} = (A_k·yᵏ + α_{k+1}·zᵏ) / A_{k+1}
            g       = ∇f(x^{k+1}, ξᵏ) + w·x^{k+1}
            z^{k+1} = zᵏ - α_{k+1}·clip(g, λ_{k+1})
            y^{k+1} = (A_k·yᵏ + α_{k+1}·z^{k+1}) / A_{k+1}
        output: yᴺ

    The parameters always hold x^{k+1}, the point where the next gradient is taken:
    ``step()`` consumes that gradient, updates z and y, then writes x^{k+2} into the
    parameters. Since x¹ = x⁰ (A₀ = 0), the first gradient is taken at x⁰. The convex
    combinations are computed as ``lerp(y, z, α_{k+1}/A_{k+1})`` (A_{k+1} = A_k + α_{k+1}
    also holds after the ratio cap). The scalar schedule lives on the device, so a
    skipped step (non-finite gradient) leaves k, A_k, x, y and z exactly as they were.

    Deviations from the public reference implementation (ClippedStochasticMethods/
    clipped-SSTM), which this class does not copy: it indexes α from (k+1), spends its
    first call on a no-op, and tests the ratio cap as A_k > α/(1-r).

    Args:
        params: parameters or parameter groups. Only ``weight_decay`` may differ per
            group; the schedule and the clipping are one per optimizer.
        lr: 1/a, the stepsize parameter (a > 0); the reference uses the same convention.
        L: Lipschitz constant of the gradient (> 0).
        clip_level: B > 0; the clipping threshold of step k is λ_{k+1} = B/α_{k+1}
            (``clip_threshold`` in the functional and the state; ``inf`` disables
            clipping: the unclipped SSTM).
        nu: Hölder exponent ν in [0, 1] (1: smooth).
        max_ratio: r in (0, 1]; 1 turns the ratio cap off.
        weight_decay: w ≥ 0, added to the gradient before clipping.
        clipping: ``"norm"``, ``"layer_wise"`` or ``"coordinate_wise"``.
        foreach: use the multi-tensor kernels (None: whenever the tensors allow).
        fused: one Triton kernel per step for the z/y/x update (:mod:`optim.fused`; the
            same results to float rounding). None: whenever every tensor is on CUDA and
            Triton is installed; True elsewhere raises (CPU only under the Triton
            interpreter, for tests).
        nonfinite: ``"skip"`` (count the step, change nothing) or ``"raise"``.
        device_path: True runs the accelerator code path (no host reads) on CPU tensors
            too; None: the CPU host path where it applies (see :mod:`optim.kernels`).

    State (``self.state[p]``): ``y`` (yᵏ), ``z`` (zᵏ); float32 for bf16/fp16 parameters
    (x is re-derived from them every step; :meth:`evaluation_point` returns y as kept).

    Optimizer state (``self.global_state``): ``step`` (k), ``A`` (A_k as it enters
    iteration k), ``alpha`` (α_{k} of the last step), ``clip_threshold`` (λ_k of the last
    step), plus the counters of :class:`~optim.base.ClippedOptimizer`.

    References:
        Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
        accelerated gradient clipping. NeurIPS 2020, Algorithm 1 (clipped-SSTM).
    """

    _global_hparams = ("lr", "L", "clip_level", "nu", "max_ratio", "clipping")
    _accumulators = ("y", "z")
    _extra_global_state = ("A", "alpha", "clip_threshold")
    _decay_before_clipping = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        L: float,
        clip_level: float,
        nu: float = 1.0,
        max_ratio: float = 1.0,
        weight_decay: float = 0.0,
        clipping: str = "norm",
        *,
        foreach: bool | None = None,
        fused: bool | None = None,
        nonfinite: str = "skip",
        device_path: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, L=L, clip_level=clip_level, nu=nu, max_ratio=max_ratio, weight_decay=weight_decay,
                        clipping=clipping)  # fmt: skip
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite, fused=fused, device_path=device_path)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("lr", group["lr"])
        check_positive("L", group["L"])
        check_positive("clip_level", group["clip_level"], allow_inf=True)
        check_range("nu", group["nu"], 0.0, 1.0, "[0, 1]")
        check_range("max_ratio", group["max_ratio"], 1e-300, 1.0, "(0, 1]")
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"), "[0, inf)")
        check_choice("clipping", group["clipping"], CLIPPING_KINDS)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step; ``closure`` (re-evaluating the loss at x^{k+1}) is optional."""
        loss, inputs = self._start_step(closure)
        if inputs is None:
            return loss
        schedule = {k: inputs.hparams[k] for k in ("lr", "L", "nu", "max_ratio")}
        gs, applied = self.global_state, inputs.applied
        # Iteration k (the one that produced x^{k+1}) and, if this step is applied, k+1.
        alpha, _, A_next = sstm_schedule(gs["step"], gs["A"], **schedule)
        alpha2, _, A_next2 = sstm_schedule(gs["step"] + 1, A_next, **schedule)
        y_weight = applied.to(gs["A"].dtype) * alpha / A_next
        x_weight = torch.where(applied, alpha2 / A_next2, alpha / A_next)
        threshold = inputs.hparams["clip_level"] / alpha  # λ_{k+1} = B / α_{k+1}
        clipped_norms = []
        for (group, params, grads), norms in zip(inputs.groups, inputs.norms):
            ys = self._state(params, "y", torch.clone)  # y⁰ = z⁰ = x⁰
            zs = self._state(params, "z", torch.clone)
            clipped_norms.append(
                clipped_sstm(
                    params,
                    grads,
                    ys,
                    zs,
                    alpha=alpha,
                    clip_threshold=threshold,
                    y_weight=y_weight,
                    x_weight=x_weight,
                    clipping=inputs.clipping.name,
                    norms=norms,
                    total_norm=inputs.total_norm,
                    applied=applied,
                    foreach=inputs.foreach,
                    fused=inputs.fused,
                    device_path=self.device_path,
                )
            )
        gs["A"].copy_(torch.where(applied, A_next, gs["A"]))
        gs["alpha"].copy_(alpha)
        gs["clip_threshold"].copy_(threshold)
        self._finish_step(inputs, threshold, clipped_norms)
        return loss

    def _extra_stats(self) -> dict[str, Tensor]:
        return {"alpha": self.global_state["alpha"], "clip_threshold": self.global_state["clip_threshold"]}

    def evaluation_point(self) -> list[Tensor]:
        """yᵏ per parameter (x⁰ before the first step)."""
        return [self.state[p].get("y", p) for p in super().evaluation_point()]


def sstm_schedule(
    step: Tensor, A: Tensor, *, lr: float, L: float, nu: float, max_ratio: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(α_{k+1}, A_k, A_{k+1})`` of iteration k after the ratio cap, on the device.

    Args:
        step: k as a 0-dim tensor. A: A_k as it enters iteration k.
    """
    two_a_L = 2.0 * (1.0 / lr) * L
    alpha = (step + 2) ** (2.0 * nu / (1.0 + nu)) / two_a_L
    A_next = A + alpha
    if max_ratio < 1.0:
        capped = A / A_next > max_ratio
        A = torch.where(capped, alpha * (max_ratio / (1.0 - max_ratio)), A)
        A_next = torch.where(capped, alpha / (1.0 - max_ratio), A_next)
    return alpha, A, A_next


def clipped_sstm(
    params: list[Tensor],
    grads: list[Tensor],
    ys: list[Tensor],
    zs: list[Tensor],
    *,
    alpha: Tensor,
    clip_threshold: Tensor | float,
    y_weight: Tensor,
    x_weight: Tensor,
    clipping: str = "norm",
    norms: list[Tensor] | None = None,
    total_norm: Tensor | None = None,
    applied: Tensor | None = None,
    foreach: bool = True,
    fused: bool = False,
    device_path: bool | None = None,
) -> Tensor | None:
    """Functional clipped-SSTM update over one list of tensors (see :class:`ClippedSSTM`).

    Computes z ← z - α·clip(g, λ), y ← lerp(y, z, y_weight), x ← lerp(y, z, x_weight).

    Args:
        alpha: α_{k+1}; clip_threshold: λ_{k+1} = B/α_{k+1}, the threshold of this step
            (not the class's ``clip_level`` B); 0-dim tensors or floats.
        y_weight: α_{k+1}/A_{k+1}, or 0 on a skipped step.
        x_weight: α_{k+2}/A_{k+2} of the next iteration (α_{k+1}/A_{k+1} when skipped).
        norms, total_norm, applied, fused, device_path: as in
            :func:`~optim.clipped_sgd.clipped_sgd`.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise``, else None.
    """
    norms, total_norm, applied = measured(grads, norms, total_norm, applied, foreach)
    update = fused_kernels.fused_clipped_sstm if fused else functools.partial(sstm_update, foreach=foreach)
    return update(
        params, grads, ys, zs, alpha=alpha, clip_threshold=clip_threshold, y_weight=y_weight, x_weight=x_weight,
        clipping=clipping, norms=norms, total_norm=total_norm, applied=applied, device_path=device_path,
    )  # fmt: skip
