"""The PyTorch update kernels of clipped-SGD and clipped-SSTM: each update written once.

One body per kernel (``_single_tensor_*`` and ``_foreach_*``, identical signatures, as in
torch.optim; written compactly since each pair repeats the other's). A
body takes the clipped gradient as ``scale · tensors`` and the skip as an optional mask,
so both code paths run through it:

- host path (CPU tensors, norm clipping): the skip is decided on the host (free there),
  ``tensors`` are the raw gradients and ``scale`` the clip coefficient as a Python
  number: no masked copy of the gradients (a fresh copy per step is page faults on a CPU);
- device path (what an accelerator runs, no host reads): ``tensors`` are the masked
  gradients (or their clamped copy), ``scale`` a 0-dim device tensor (or one per tensor)
  and ``mask`` the 0/1 skip flag that gates momentum and weight decay.

These kernels sit below :mod:`optim.fused`, whose ``compile`` backend compiles them, and
below the optimizer modules, whose public functionals dispatch here or to the fused
kernels.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .clipping import Scale, get_clipping, global_norm, host_path, tensor_norms

__all__ = ["measured", "sgd_update", "sstm_update"]


def measured(grads: Sequence[Tensor], norms: Sequence[Tensor] | None, total_norm: Tensor | None,
             applied: Tensor | None, foreach: bool) -> tuple[list[Tensor], Tensor, Tensor]:  # fmt: skip
    """The pre-clip norms and the finiteness flag, computed from ``grads`` where not given."""
    norms = tensor_norms(grads, foreach=foreach) if norms is None else list(norms)
    total_norm = global_norm(norms) if total_norm is None else total_norm
    return norms, total_norm, torch.isfinite(total_norm) if applied is None else applied


def _times(scale: Scale, factor: Tensor) -> Scale:
    return [s * factor for s in scale] if isinstance(scale, list) else scale * factor


def sgd_update(params, grads, momentum_buffers, averages, *, lr: float, clip_threshold: float | Tensor,
               momentum: float, weight_decay: float, clipping: str, norms: list[Tensor], total_norm: Tensor,
               applied: Tensor, average_weight: Tensor | None, foreach: bool,
               device_path: bool | None = None) -> Tensor | None:  # fmt: skip
    """One clipped-SGD step through the PyTorch kernels (arguments as :func:`optim.clipped_sgd`)."""
    kind = get_clipping(clipping)
    kernel = _foreach_clipped_sgd if foreach else _single_tensor_clipped_sgd
    hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, average_weight=average_weight)
    if host_path(kind, applied, params, device_path=device_path):
        if bool(applied):  # a CPU read: free
            tensors, scale = kind.apply(grads, clip_threshold, norms=norms, total_norm=total_norm, foreach=foreach)
            kernel(params, tensors, momentum_buffers, averages, grad_scale=float(scale), mask=None, **hyper)
        return None
    tensors, scale = kind.apply(grads, clip_threshold, norms=norms, total_norm=total_norm, mask=applied,
                                foreach=foreach)  # fmt: skip
    kernel(params, tensors, momentum_buffers, averages, grad_scale=scale, mask=applied.to(params[0].dtype), **hyper)
    return kind.clipped_norm(tensors, scale, norms=norms, foreach=foreach)


def sstm_update(params, grads, ys, zs, *, alpha: Tensor, clip_threshold: float | Tensor, y_weight: Tensor,
                x_weight: Tensor, clipping: str, norms: list[Tensor], total_norm: Tensor, applied: Tensor,
                foreach: bool, device_path: bool | None = None) -> Tensor | None:  # fmt: skip
    """One clipped-SSTM update through the PyTorch kernels (arguments as :func:`optim.clipped_sstm`)."""
    kind = get_clipping(clipping)
    kernel = _foreach_clipped_sstm if foreach else _single_tensor_clipped_sstm
    # The accumulators may be float32 under lower-precision parameters (see ClippedSSTM).
    weights = dict(y_weight=y_weight.to(ys[0].dtype), x_weight=x_weight.to(ys[0].dtype))
    if host_path(kind, applied, params, device_path=device_path):
        # A skipped step (tensors=None) leaves y and z and re-derives x from them.
        tensors, scale = None, 0.0
        if bool(applied):
            tensors, scale = kind.apply(grads, clip_threshold, norms=norms, total_norm=total_norm, foreach=foreach)
            scale = float(-alpha * scale)
        kernel(params, tensors, ys, zs, grad_scale=scale, **weights)
        return None
    tensors, scale = kind.apply(grads, clip_threshold, norms=norms, total_norm=total_norm, mask=applied,
                                foreach=foreach)  # fmt: skip
    kernel(params, tensors, ys, zs, grad_scale=_times(scale, -alpha), **weights)
    return kind.clipped_norm(tensors, scale, norms=norms, foreach=foreach)


# ------------------------------------------------------------------------- helpers
def _add_scaled_(dst: Tensor, src: Tensor, scale: float | Tensor, alpha: float = 1.0) -> None:
    """dst += alpha · (scale · src), scale a number or a 0-dim tensor."""
    if isinstance(scale, Tensor):  # in dst's dtype: float32 accumulators of bf16 gradients
        dst.add_(src.to(dst.dtype) * scale, alpha=alpha)
    else:
        dst.add_(src, alpha=alpha * scale)


def _foreach_add_scaled_(dst: list[Tensor], src: list[Tensor], scale: Scale, alpha: float = 1.0) -> None:
    """As :func:`_add_scaled_` for lists, with the same roundings (the two bodies agree
    bit for bit). A device scale is a multiply then an add: both stay on CUDA's fast foreach
    path, where ``_foreach_addcmul_`` with 0-dim factors falls back to one launch per tensor."""
    if isinstance(scale, (Tensor, list)):
        torch._foreach_add_(dst, torch._foreach_mul(_same_dtype(src, dst), scale), alpha=alpha)
    else:
        torch._foreach_add_(dst, src, alpha=alpha * scale)


def _same_dtype(sources: list[Tensor], like: list[Tensor]) -> list[Tensor]:
    """``sources`` cast to the dtypes of ``like`` (float32 accumulators of bf16 parameters)."""
    return [s if s.dtype == t.dtype else s.to(t.dtype) for s, t in zip(sources, like)]


# ---------------------------------------------------------------------- clipped-SGD
def _single_tensor_clipped_sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor] | None,
                               averages: list[Tensor] | None, *, lr: float, momentum: float, weight_decay: float,
                               grad_scale: Scale, mask: Tensor | None,
                               average_weight: Tensor | None) -> None:  # fmt: skip
    # The clipped gradient is grad_scale · grads[i]; `mask` (0/1, or None when the step is
    # known to apply) keeps a skipped step's weight decay and momentum out.
    scales = grad_scale if isinstance(grad_scale, list) else [grad_scale] * len(params)
    for i, (x, g, s) in enumerate(zip(params, grads, scales)):
        if averages is not None:  # x̄ ← x̄ + (xᵏ - x̄)/(k+1), before x moves
            a = averages[i]
            a.lerp_(x if x.dtype == a.dtype else x.to(a.dtype), average_weight.to(a.dtype))
        if momentum:
            b = momentum_buffers[i]
            # μ on an applied step, 1 on a skipped one: b stays as it was.
            b.mul_(momentum if mask is None else 1 + mask * (momentum - 1))
            _add_scaled_(b, g, s)
            if weight_decay:
                b.add_(x, alpha=weight_decay) if mask is None else b.addcmul_(x, mask, value=weight_decay)
            x.add_(b, alpha=-lr) if mask is None else x.addcmul_(b, mask, value=-lr)
        else:
            if weight_decay:
                x.mul_(1 - lr * weight_decay if mask is None else 1 - (lr * weight_decay) * mask)
            _add_scaled_(x, g, s, -lr)


def _foreach_clipped_sgd(params: list[Tensor], grads: list[Tensor], momentum_buffers: list[Tensor] | None,
                         averages: list[Tensor] | None, *, lr: float, momentum: float, weight_decay: float,
                         grad_scale: Scale, mask: Tensor | None, average_weight: Tensor | None) -> None:  # fmt: skip
    n = len(params)
    if averages is not None:
        torch._foreach_lerp_(averages, _same_dtype(params, averages), [average_weight.to(averages[0].dtype)] * n)
    if momentum:
        torch._foreach_mul_(momentum_buffers, momentum if mask is None else 1 + mask * (momentum - 1))
        _foreach_add_scaled_(momentum_buffers, grads, grad_scale)
        if weight_decay:
            if mask is None:
                torch._foreach_add_(momentum_buffers, params, alpha=weight_decay)
            else:
                torch._foreach_addcmul_(momentum_buffers, params, [mask] * n, value=weight_decay)
        if mask is None:
            torch._foreach_add_(params, momentum_buffers, alpha=-lr)
        else:
            torch._foreach_addcmul_(params, momentum_buffers, [mask] * n, value=-lr)
    else:
        if weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay if mask is None else 1 - (lr * weight_decay) * mask)
        _foreach_add_scaled_(params, grads, grad_scale, -lr)


# --------------------------------------------------------------------- clipped-SSTM
def _single_tensor_clipped_sstm(params: list[Tensor], grads: list[Tensor] | None, ys: list[Tensor],
                                zs: list[Tensor], *, grad_scale: Scale, y_weight: Tensor,
                                x_weight: Tensor) -> None:  # fmt: skip
    # z ← z + grad_scale·g (grad_scale = -α·clip factor), y ← lerp(y, z, y_weight),
    # x ← lerp(y, z, x_weight). grads=None (host path, skipped step): only x is re-derived.
    scales = grad_scale if isinstance(grad_scale, list) else [grad_scale] * len(params)
    for i, (x, y, z) in enumerate(zip(params, ys, zs)):
        if grads is not None:
            _add_scaled_(z, grads[i], scales[i])
            y.lerp_(z, y_weight)
        torch.lerp(y, z, x_weight, out=x)


def _foreach_clipped_sstm(params: list[Tensor], grads: list[Tensor] | None, ys: list[Tensor], zs: list[Tensor], *,
                          grad_scale: Scale, y_weight: Tensor, x_weight: Tensor) -> None:  # fmt: skip
    n = len(params)
    if grads is not None:  # as in _single_tensor_clipped_sstm
        _foreach_add_scaled_(zs, grads, grad_scale)
        torch._foreach_lerp_(ys, zs, [y_weight] * n)
    if params[0].device.type == "cpu" or params[0].dtype != ys[0].dtype:
        # aten's CPU _foreach_lerp.List_out computes a new list and copies it over: a
        # fresh allocation (page faults) and two more passes per step. (It also takes one
        # dtype only: float32 accumulators of bf16 parameters go tensor by tensor.)
        for x, y, z in zip(params, ys, zs):
            torch.lerp(y, z, x_weight, out=x)
    else:
        torch.ops.aten._foreach_lerp.List_out(ys, zs, [x_weight] * n, out=params)
