"""Clipping primitives shared by every optimizer and by the logging callback.

    clip(g, λ) = min(1, λ / ‖g‖₂) · g

``norm`` uses the l2 norm of the whole gradient (every tensor the optimizer handles),
``layer_wise`` applies the same formula to each tensor, ``coordinate_wise`` clamps each
coordinate to [-λ, λ]. The factor is computed on the device as
``clamp(λ / (‖g‖ + eps), max=1)`` and always multiplied in: nothing here reads a device
value on the host, so an optimizer step built from these functions never synchronises.

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020 (arXiv:2005.10785).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import Tensor

__all__ = [
    "CLIPPING_KINDS",
    "EPS",
    "clip_coefficient",
    "clip_gradients",
    "clip_ratio",
    "device_code_path",
    "global_norm",
    "host_path",
    "tensor_norms",
]

#: The eps of ``torch.nn.utils.clip_grad_norm_``; keeps λ / ‖g‖ finite at g = 0.
EPS = 1e-6

CLIPPING_KINDS = ("norm", "layer_wise", "coordinate_wise")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def tensor_norms(tensors: Sequence[Tensor], *, foreach: bool = True) -> list[Tensor]:
    """The l2 norm of each tensor, as 0-dim device tensors.

    fp16/bf16 tensors are reduced in float32 so that the global norm of a large model does
    not overflow; float32/float64 tensors keep their dtype (the same numbers as
    ``clip_grad_norm_``).
    """
    if not tensors:
        return []
    low = [t.dtype in _LOW_PRECISION for t in tensors]
    if not foreach:
        return [torch.linalg.vector_norm(t, dtype=torch.float32 if lp else None) for t, lp in zip(tensors, low)]
    if not any(low):
        return list(torch._foreach_norm(list(tensors)))
    # One launch per precision class, the results put back in the tensors' order.
    out: list[Tensor | None] = [None] * len(tensors)
    for want_low in (True, False):
        index = [i for i, lp in enumerate(low) if lp == want_low]
        if index:
            dtype = torch.float32 if want_low else None
            for i, n in zip(index, torch._foreach_norm([tensors[i] for i in index], 2, dtype=dtype)):
                out[i] = n
    return out  # type: ignore[return-value]


def global_norm(norms: Sequence[Tensor]) -> Tensor:
    """The l2 norm of the concatenation of tensors, from their norms (no extra pass)."""
    if not norms:
        raise ValueError("global_norm needs at least one tensor norm")
    device = norms[0].device
    dtype = torch.float32
    for other in {n.dtype for n in norms}:
        dtype = torch.promote_types(dtype, other)
    return torch.linalg.vector_norm(torch.stack([n.to(device=device, dtype=dtype) for n in norms]))


_device_path_forced = False


def host_path(clipping: str, applied: Tensor, tensors: Sequence[Tensor]) -> bool:
    """Whether the clipped kernels take their host path for this step.

    That is: norm clipping, one skip flag for the whole step (not the convex suite's
    per-run masks), and every tensor in host memory (CPU), where reading a 0-dim tensor's
    value is a memory load, not a device synchronisation. The kernels then branch on a
    skipped step and pass the clip coefficient as a number instead of masking and scaling
    a copy of the gradients. On an accelerator everything stays on the device (and on CPU
    too inside :func:`device_code_path`).
    """
    return (
        clipping == "norm"
        and applied.dim() == 0
        and not _device_path_forced
        and all(t.device.type == "cpu" for t in tensors)
    )


@contextlib.contextmanager
def device_code_path() -> Iterator[None]:
    """Run the accelerator code path (no host reads) on CPU tensors as well: for auditing
    on a CPU what a GPU step would synchronise, and for testing that path."""
    global _device_path_forced
    previous, _device_path_forced = _device_path_forced, True
    try:
        yield
    finally:
        _device_path_forced = previous


def clip_coefficient(norm: Tensor, clip_level: float | Tensor) -> Tensor:
    """``min(1, λ / (‖g‖ + eps))`` on the device; λ = ∞ gives exactly 1."""
    return torch.clamp(clip_level / (norm + EPS), max=1.0)


def clip_gradients(
    grads: Sequence[Tensor],
    clip_level: float | Tensor,
    clipping: str,
    *,
    norms: Sequence[Tensor],
    total_norm: Tensor,
    applied: Tensor,
    scale: float | Tensor = 1.0,
    foreach: bool = True,
) -> tuple[list[Tensor], Tensor | None]:
    """New tensors ``scale · clip(g, λ)``, all zero when ``applied`` is False.

    Args:
        grads: the gradients (not modified).
        clip_level: λ, a float or a 0-dim device tensor (clipped-SSTM's λ_k = B / α_k).
        clipping: one of :data:`CLIPPING_KINDS`.
        norms: the per-tensor norms of ``grads`` (used by ``layer_wise``).
        total_norm: the global pre-clip norm (used by ``norm``), over every tensor of the
            optimizer, which may be more than ``grads``.
        applied: 0-dim bool tensor, False when the global norm is not finite. The
            gradient is then replaced by zeros *before* any arithmetic, because
            ``0 · inf`` is NaN: this is what keeps a non-finite gradient out of the
            parameters and the optimizer state.
        scale: a factor folded into the same pass (for example -α_k).

    Returns:
        ``(clipped, clipped_norm)``: one tensor per gradient, and ``‖clip(g)‖`` over
        these tensors for ``layer_wise`` and ``coordinate_wise`` (None for ``norm``,
        whose clip coefficient already is the ratio; see :func:`clip_ratio`).
        ``coordinate_wise`` pays one extra read of the clipped tensors for it.
    """
    # One fused pass per tensor; torch has no foreach `where`.
    out = [torch.where(applied, g, 0.0) for g in grads]
    clipped_norm = None
    # The factors are masked too: λ / NaN is NaN, and NaN · 0 is NaN.
    if clipping == "norm":
        factor = torch.where(applied, clip_coefficient(total_norm, clip_level), 0.0)
        _mul_(out, factor * scale, foreach)
        return out, None
    if clipping == "layer_wise":
        factors = [torch.where(applied, clip_coefficient(n, clip_level), 0.0) for n in norms]
        for d, f in zip(out, factors):
            d.mul_(f * scale)
        if norms:
            clipped_norm = global_norm([f * n for f, n in zip(factors, norms)])
    elif clipping == "coordinate_wise":
        if isinstance(clip_level, Tensor):
            for d in out:
                torch.clamp(d, -clip_level, clip_level, out=d)
        elif foreach:
            torch._foreach_clamp_min_(out, -clip_level)
            torch._foreach_clamp_max_(out, clip_level)
        else:
            for d in out:
                d.clamp_(-clip_level, clip_level)
        if out:
            clipped_norm = global_norm(tensor_norms(out, foreach=foreach))
        if not (isinstance(scale, float) and scale == 1.0):
            _mul_(out, scale, foreach)
    else:
        raise ValueError(f"Invalid clipping: {clipping!r} (must be one of {CLIPPING_KINDS})")
    return out, clipped_norm


def clip_ratio(
    clipping: str,
    clip_level: float | Tensor,
    total_norm: Tensor,
    clipped_norms: Sequence[Tensor | None] = (),
) -> Tensor:
    """``‖clip(g)‖ / ‖g‖`` for logging: the clip coefficient itself for ``norm``.

    ``clipped_norms`` are the second outputs of :func:`clip_gradients`, one per call
    (an optimizer calls it once per parameter group).
    """
    if clipping == "norm":
        return clip_coefficient(total_norm, clip_level)
    after = global_norm([n for n in clipped_norms if n is not None])
    return torch.clamp(after / (total_norm + EPS), max=1.0)


def _mul_(tensors: list[Tensor], factor: float | Tensor, foreach: bool) -> None:
    if foreach:
        torch._foreach_mul_(tensors, factor)
    else:
        for t in tensors:
            t.mul_(factor)
