"""Clipped Adam (Chezhegov et al. 2025): clip the gradient, then exactly AdamW."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Iterable

import torch
from torch import Tensor

from .base import ClippedOptimizer, check_choice, check_positive, check_range
from .clipping import CLIPPING_KINDS, clip_coefficient, clip_gradients, get_clipping, host_path

__all__ = ["ClippedAdam"]


class ClippedAdam(ClippedOptimizer):
    r"""AdamW on the clipped gradient.

    .. code-block:: text

        g̃ = clip(g, λ)                               (norm / layer_wise / coordinate_wise)
        t ← t + 1
        x ← x·(1 - η·w)                               (decoupled weight decay)
        m ← β₁·m + (1-β₁)·g̃,   v ← β₂·v + (1-β₂)·g̃²
        x ← x - η/(1-β₁ᵗ) · m / (√v / √(1-β₂ᵗ) + ε)   (eps outside the square root)

    With ``clipping="norm"`` this is ``clip_grad_norm_(params, λ)`` followed by
    ``torch.optim.AdamW`` (λ = ∞: AdamW itself). On CPU the update *is* torch's AdamW
    kernel (``torch.optim.adam.adam`` with decoupled weight decay) on the clipped
    gradient; on an accelerator a masked transcription of it runs, so that a skipped
    step needs no host read.

    Args:
        params: parameters or parameter groups. ``lr``, ``betas``, ``eps`` and
            ``weight_decay`` may differ per group; ``clip_level`` and ``clipping`` act on
            the global gradient and must be the same in every group.
        lr: η > 0.
        clip_level: λ > 0, ``inf`` disables clipping.
        betas: (β₁, β₂), each in [0, 1).
        eps: ε > 0.
        weight_decay: w ≥ 0, decoupled (as AdamW).
        clipping: ``"norm"`` (global l2 norm over all groups), ``"layer_wise"`` or
            ``"coordinate_wise"``.
        foreach: use the multi-tensor kernels (None: whenever the tensors allow).
        nonfinite: ``"skip"`` or ``"raise"``, as for :class:`~optim.clipped_sgd.ClippedSGD`.

    State (``self.state[p]``, torch's AdamW keys): ``step`` (t, a 0-dim tensor on the
    parameter's device), ``exp_avg`` (m), ``exp_avg_sq`` (v).

    Optimizer state (``self.global_state``): the counters and last-step statistics of
    :class:`~optim.base.ClippedOptimizer`.

    References:
        Chezhegov, Klyukin, Semenov, Beznosikov, Gasnikov, Horváth, Takáč, Gorbunov.
        Clipping improves Adam-Norm and AdaGrad-Norm when the noise is heavy-tailed.
        ICML 2025. Loshchilov, Hutter. Decoupled weight decay regularization. ICLR 2019.
    """

    _global_hparams = ("clip_level", "clipping")

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        clip_level: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        clipping: str = "norm",
        *,
        foreach: bool | None = None,
        nonfinite: str = "skip",
    ) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
        defaults = dict(lr=lr, clip_level=clip_level, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        clipping=clipping)  # fmt: skip
        super().__init__(params, defaults, foreach=foreach, nonfinite=nonfinite)

    def _validate_group(self, group: dict[str, Any]) -> None:
        check_positive("lr", group["lr"])
        check_positive("clip_level", group["clip_level"], allow_inf=True)
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"Invalid betas: {betas!r} (must be a pair (beta1, beta2))")
        check_range("betas[0]", betas[0], 0.0, 1.0 - 1e-12, "[0, 1)")
        check_range("betas[1]", betas[1], 0.0, 1.0 - 1e-12, "[0, 1)")
        check_positive("eps", group["eps"])
        check_range("weight_decay", group["weight_decay"], 0.0, float("inf"), "[0, inf)")
        check_choice("clipping", group["clipping"], CLIPPING_KINDS)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step; ``closure`` (re-evaluating the loss) is optional."""
        loss, inputs = self._start_step(closure)
        if inputs is None:
            return loss
        collected, foreach = inputs.groups, inputs.foreach
        all_grads = [g for _, _, gs in collected for g in gs]
        norms, total, applied = inputs.norms, inputs.total_norm, inputs.applied
        clip_level, clipping = (inputs.hparams[k] for k in self._global_hparams)
        params = [p for _, ps, _ in collected for p in ps]
        host = host_path(clipping, applied, params)
        if host and not bool(applied):
            self._record(total, torch.ones_like(total), torch.zeros_like(applied), applied)
            return loss
        coefficient = clip_coefficient(total, clip_level)
        clipped_norms = []
        for (group, ps, gs), group_norms in zip(collected, norms):
            m, v, steps = self._state_lists(ps)
            beta1, beta2 = group["betas"]
            hp = dict(lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"])
            if host:
                c = float(coefficient)
                d = gs if c == 1.0 else (torch._foreach_mul(gs, c) if foreach else [g * c for g in gs])
                _torch_adamw(ps, d, m, v, steps, foreach=foreach, **hp)
                continue
            d, clipped_norm = clip_gradients(gs, clip_level, clipping, norms=group_norms, total_norm=total,
                                             applied=applied, foreach=foreach)  # fmt: skip
            clipped_norms.append(clipped_norm)
            _masked_adamw(ps, d, m, v, steps, applied=applied, foreach=foreach, **hp)
        factor, clipped = get_clipping(clipping).stats(
            clip_level, grads=all_grads, norms=[n for group in norms for n in group], total_norm=total,
            clipped_norms=clipped_norms, foreach=foreach,
        )
        self._record(total, factor, clipped, applied)
        return loss

    def _new_step_count(self, param: Tensor) -> Tensor:
        """t = 0 for a new parameter (a hook: the convex suite keeps one t per run)."""
        return torch.zeros((), dtype=torch.float32, device=param.device)

    def _state_lists(self, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        m, v, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = self._new_step_count(p)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            m.append(state["exp_avg"])
            v.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return m, v, steps


# torch's functional AdamW (the module, not the package's re-exported class names).
_adam = importlib.import_module("torch.optim.adam").adam
_DECOUPLED = "decoupled_weight_decay" in inspect.signature(_adam).parameters


def _torch_adamw(params, grads, m, v, steps, *, lr, beta1, beta2, eps, weight_decay, foreach) -> None:
    """torch's own AdamW update (host path: the step counters are CPU tensors)."""
    kwargs = dict(foreach=foreach, amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
                  eps=eps, maximize=False)  # fmt: skip
    if _DECOUPLED:
        _adam(params, grads, m, v, [], steps, decoupled_weight_decay=True, **kwargs)
    else:  # torch < 2.6 keeps AdamW's functional apart
        importlib.import_module("torch.optim.adamw").adamw(params, grads, m, v, [], steps, **kwargs)


def _masked_adamw(params, grads, m, v, steps, *, lr, beta1, beta2, eps, weight_decay, applied, foreach) -> None:
    """AdamW with every term masked by ``applied`` (0-dim bool): a skipped step (zero
    ``grads``) leaves x, m, v and t exactly as they were, with no host read."""
    a = applied.to(params[0].dtype)
    if not foreach:
        for x, g, mi, vi, t in zip(params, grads, m, v, steps):
            _masked_adamw_one(x, g, mi, vi, t, a, lr, beta1, beta2, eps, weight_decay)
        return
    torch._foreach_add_(steps, a.to(steps[0].dtype))
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay * a)
    torch._foreach_mul_(m, 1 + a * (beta1 - 1))
    torch._foreach_add_(m, grads, alpha=1 - beta1)
    torch._foreach_mul_(v, 1 + a * (beta2 - 1))
    torch._foreach_addcmul_(v, grads, grads, value=1 - beta2)
    t = [_exponent(s) for s in steps]
    bc1 = [1 - torch.pow(beta1, s) for s in t]
    bc2_sqrt = [(1 - torch.pow(beta2, s)).sqrt() for s in t]
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, [b.to(x.dtype) for b, x in zip(bc2_sqrt, params)])
    torch._foreach_add_(denom, eps)
    factors = [(-lr * a / b).to(x.dtype) for b, x in zip(bc1, params)]
    update = torch._foreach_div(m, denom)
    torch._foreach_addcmul_(params, update, factors)


def _masked_adamw_one(x, g, m, v, t, a, lr, beta1, beta2, eps, weight_decay) -> None:
    t.add_(a.to(t.dtype))
    if weight_decay:
        x.mul_(1 - lr * weight_decay * a)
    m.mul_(1 + a * (beta1 - 1)).add_(g, alpha=1 - beta1)
    v.mul_(1 + a * (beta2 - 1)).addcmul_(g, g, value=1 - beta2)
    s = _exponent(t)
    denom = v.sqrt() / (1 - torch.pow(beta2, s)).sqrt().to(x.dtype) + eps
    x.addcmul_(m / denom, (-lr * a / (1 - torch.pow(beta1, s))).to(x.dtype))


def _exponent(step: Tensor) -> Tensor:
    # float64 bias corrections, as torch's host-side `beta ** step` (MPS has no float64);
    # t = 0 only before a first applied step, whose update is masked anyway.
    dtype = torch.float32 if step.device.type == "mps" else torch.float64
    return step.clamp(min=1).to(dtype)
