"""NSGD-M: normalized SGD with momentum (Cutkosky & Mehta 2020), optionally clipped (2021)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .base import ClippedOptimizer, check_choice, check_positive, check_range
from .clipping import CLIPPING_KINDS, clip_coefficient, clip_gradients, get_clipping, global_norm, host_path, tensor_norms

__all__ = ["NORMALIZE_KINDS", "NSGDM"]

NORMALIZE_KINDS = ("global", "layer_wise")

#: the floor of ‖m‖ in the normalization (the algorithm's definition): m = 0 gives a zero step.
NORM_FLOOR = 1e-12


class NSGDM(ClippedOptimizer):
    r"""Normalized SGD with momentum, with optional clipping of the gradient.

    .. code-block:: text

        m⁰ = 0
        for k = 0 … N-1:
            g = ∇f(xᵏ, ξᵏ) + w·xᵏ                   (coupled weight decay)
            m = β·m + (1-β)·clip(g, τ)              (τ = ∞: no clipping)
            x^{k+1} = xᵏ - η·m / max(‖m‖, 1e-12)    (‖m‖ over all groups, or per tensor)

    Args:
        params: parameters or parameter groups. ``lr``, ``momentum`` and ``weight_decay``
            may differ per group; ``clip_level``, ``clipping`` and ``normalize`` act on
            global norms and must be the same in every group.
        lr: η > 0.
        momentum: β in [0, 1) (0.9).
        clip_level: τ > 0, ``inf`` (default) disables clipping (the 2020 method).
        weight_decay: w ≥ 0, added to the gradient before clipping.
        clipping: the clipping kind, ``"norm"`` (global), ``"layer_wise"`` or
            ``"coordinate_wise"``.
        normalize: ``"global"``: divide m by its norm over every tensor of the optimizer;
            ``"layer_wise"``: each tensor's m by its own norm.
        foreach: use the multi-tensor kernels (None: whenever the tensors allow).
        nonfinite: ``"skip"`` or ``"raise"``, as for :class:`~optim.clipped_sgd.ClippedSGD`.

    State (``self.state[p]``): ``momentum_buffer``: m.

    Optimizer state (``self.global_state``): ``step`` (k) and the counters and last-step
    statistics of :class:`~optim.base.ClippedOptimizer`; ``grad_norm`` is ‖g‖ with the
    weight decay term included (the vector that is clipped).

    References:
        Cutkosky, Mehta. Momentum improves normalized SGD. ICML 2020.
        Cutkosky, Mehta. High-probability bounds for non-convex stochastic optimization
        with heavy tails. NeurIPS 2021 (the clipped variant).
    """

    _global_hparams = ("clip_level", "clipping", "normalize")
    _decay_before_clipping = True

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        clip_level: float = float("inf"),
        weight_decay: float = 0.0,
        clipping: str = "norm",
        normalize: str = "global",
        *,
        foreach: bool | None = None,
        nonfinite: str = "skip",
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, clip_level=clip_level, weight_decay=weight_decay,
                        clipping=clipping, normalize=normalize)  # fmt: skip
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("lr", group["lr"])
        check_range("momentum", group["momentum"], 0.0, 1.0 - 1e-12, "[0, 1)")
        check_positive("clip_level", group["clip_level"], allow_inf=True)
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"), "[0, inf)")
        check_choice("clipping", group["clipping"], CLIPPING_KINDS)
        check_choice("normalize", group["normalize"], NORMALIZE_KINDS)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step; ``closure`` (re-evaluating the loss) is optional."""
        loss, inputs = self._start_step(closure)
        if inputs is None:
            return loss
        # g = ∇f + w·x is the vector that is clipped (the base adds w·x before measuring).
        collected, foreach = inputs.groups, inputs.foreach
        grads = [gs for _, _, gs in collected]
        norms, total, applied = inputs.norms, inputs.total_norm, inputs.applied
        clip_level, clipping, normalize = (inputs.hparams[k] for k in self._global_hparams)
        params = [p for _, ps, _ in collected for p in ps]
        host = host_path(clipping, applied, params)
        if host and not bool(applied):
            self._record(total, torch.ones_like(total), torch.zeros_like(applied), applied)
            return loss
        buffers = [self._buffers(ps) for _, ps, _ in collected]
        clipped_norms = []
        coefficient = float(clip_coefficient(total, clip_level)) if host else None
        for (group, _, _), g, b, n in zip(collected, grads, buffers, norms):
            beta = group["momentum"]
            if host:  # CPU: one pass, m ← lerp(m, c·g, 1-β)
                _momentum_host(b, g, beta, coefficient, foreach)
                continue
            d, clipped_norm = clip_gradients(g, clip_level, clipping, norms=n, total_norm=total, applied=applied,
                                             scale=1 - beta, foreach=foreach)  # fmt: skip
            clipped_norms.append(clipped_norm)
            # β on an applied step, 1 on a skipped one (d is zero there): m stays.
            keep = 1 + applied.to(b[0].dtype) * (beta - 1)
            _mul_add(b, keep, d, foreach)
        all_buffers = [t for group in buffers for t in group]
        m_norms, m_total = self._momentum_norms(all_buffers, foreach)
        if normalize == "global":
            inverse = [1 / m_total.clamp(min=NORM_FLOOR)] * len(all_buffers)
        else:
            inverse = [1 / n.clamp(min=NORM_FLOOR) for n in m_norms]
        start = 0
        for (group, ps, _), b in zip(collected, buffers):
            scales = inverse[start : start + len(ps)]
            start += len(ps)
            if host and normalize == "global":  # CPU: the factor as a number, one pass
                _add_(ps, b, -group["lr"] * float(scales[0]), foreach)
                continue
            mask = 1.0 if host else applied.to(scales[0].dtype)
            factors = [(-group["lr"] * mask * s).to(x.dtype) for s, x in zip(scales, ps)]
            _addcmul_(ps, b, factors, foreach)
        factor, clipped = get_clipping(clipping).stats(
            clip_level, grads=[t for g in grads for t in g], norms=[t for n in norms for t in n], total_norm=total,
            clipped_norms=clipped_norms, foreach=foreach,
        )
        self._record(total, factor, clipped, applied)
        return loss

    def _momentum_norms(self, buffers: list[Tensor], foreach: bool) -> tuple[list[Tensor], Tensor]:
        """Per-tensor norms of m and ‖m‖ over all of them (a hook, like ``_measure``: the
        convex suite takes both per run)."""
        norms = tensor_norms(buffers, foreach=foreach)
        return norms, global_norm(norms)

    def _buffers(self, params: list[Tensor]) -> list[Tensor]:
        out = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            out.append(state["momentum_buffer"])
        return out


def _momentum_host(buffers: list[Tensor], grads: list[Tensor], beta: float, coefficient: float, foreach: bool) -> None:
    # m = β·m + (1-β)·c·g: a lerp when c = 1 (unclipped), else scale and add.
    if foreach:
        if coefficient == 1.0:
            torch._foreach_lerp_(buffers, grads, 1 - beta)
        else:
            torch._foreach_mul_(buffers, beta)
            torch._foreach_add_(buffers, grads, alpha=(1 - beta) * coefficient)
        return
    for m, g in zip(buffers, grads):
        if coefficient == 1.0:
            m.lerp_(g, 1 - beta)
        else:
            m.mul_(beta).add_(g, alpha=(1 - beta) * coefficient)


def _mul_add(buffers: list[Tensor], keep: Tensor, d: list[Tensor], foreach: bool) -> None:
    if foreach:
        torch._foreach_mul_(buffers, keep)
        torch._foreach_add_(buffers, d)
    else:
        for m, di in zip(buffers, d):
            m.mul_(keep).add_(di)


def _add_(params: list[Tensor], buffers: list[Tensor], alpha: float, foreach: bool) -> None:
    if foreach:
        torch._foreach_add_(params, buffers, alpha=alpha)
    else:
        for x, m in zip(params, buffers):
            x.add_(m, alpha=alpha)


def _addcmul_(params: list[Tensor], buffers: list[Tensor], factors: list[Tensor], foreach: bool) -> None:
    """``x ← x + m·f`` with a 0-dim device factor per tensor (no host read)."""
    if foreach:
        torch._foreach_addcmul_(params, buffers, factors)
    else:
        for x, m, f in zip(params, buffers, factors):
            x.addcmul_(m, f)
