"""Clipping primitives and the clipping kinds, shared by every optimizer and the logging callback.

    clip(g, λ) = min(1, λ / ‖g‖₂) · g

``norm`` uses the l2 norm of the whole gradient (every tensor the optimizer handles),
``layer_wise`` applies the same formula to each tensor, ``coordinate_wise`` clamps each
coordinate to [-λ, λ]. λ is the *threshold* of the step: clipped-SGD's ``clip_level``,
clipped-SSTM's λ_k = B / α_k. The factor is computed on the device as
``clamp(λ / (‖g‖ + eps), max=1)`` and always multiplied in: nothing here reads a device
value on the host, so an optimizer step built from these functions never synchronises.

Each kind is a small stateless object with one interface (the optax lesson: clipping as
a composable piece, not a flag inside each optimizer):

- :meth:`Clipping.measure`: the per-tensor norms a step needs;
- :meth:`Clipping.factor`: the multiplier(s) ``clip(g) = factor · g`` where one exists;
- :meth:`Clipping.apply`: ``(tensors, scale)`` with ``clip(g) = scale · tensors``, the
  skip mask applied, for the update kernels to fold into their own pass;
- :meth:`Clipping.stats`: the step's clip factor and whether it clipped (see below).

Telemetry, the same on every code path (host, device, foreach, single-tensor, fused):

- a step is *clipped* when some tensor (``norm``, ``layer_wise``) or coordinate
  (``coordinate_wise``) was actually scaled: ``norm``: ‖g‖ > 0 and its factor < 1;
  ``layer_wise``: some tensor with ‖g_t‖ > 0 and factor < 1; ``coordinate_wise``: some
  |g_i| > λ (‖g‖_∞ > λ). A zero gradient is never clipped, nor is anything at λ = ∞.
- the *clip factor* is ‖clip(g)‖ / ‖g‖ on a clipped step and exactly 1 otherwise (so a
  zero gradient reports 1). For ``norm`` it is the clip coefficient itself.

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020 (arXiv:2005.10785).
    Babuschkin et al. The DeepMind JAX ecosystem (optax: gradient transformations), 2020.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
from typing import ClassVar, Iterator, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "CLIPPING_KINDS",
    "EPS",
    "ClipCode",
    "Clipping",
    "CoordinateWiseClipping",
    "LayerWiseClipping",
    "NormClipping",
    "clip_coefficient",
    "clip_gradients",
    "device_code_path",
    "get_clipping",
    "global_norm",
    "host_path",
    "tensor_norms",
]

#: The eps of ``torch.nn.utils.clip_grad_norm_``; keeps λ / ‖g‖ finite at g = 0.
EPS = 1e-6

_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: ``clip(g) = scale · tensors``: one number or 0-dim tensor for all tensors, or one per tensor.
Scale = Union[float, Tensor, list]


class ClipCode(enum.IntEnum):
    """The kinds as the Triton kernels see them (a ``tl.constexpr``): one table for both."""

    NORM = 0
    LAYER_WISE = 1
    COORDINATE_WISE = 2


def tensor_norms(tensors: Sequence[Tensor], *, foreach: bool = True, ord: float = 2.0) -> list[Tensor]:
    """The l2 norm (or the ``ord`` norm, e.g. ``inf``) of each tensor, as 0-dim device tensors.

    fp16/bf16 tensors are reduced in float32 so that the global norm of a large model does
    not overflow; float32/float64 tensors keep their dtype (the same numbers as
    ``clip_grad_norm_``).
    """
    if not tensors:
        return []
    low = [t.dtype in _LOW_PRECISION for t in tensors]
    if not foreach:
        return [torch.linalg.vector_norm(t, ord, dtype=torch.float32 if lp else None) for t, lp in zip(tensors, low)]
    if not any(low):
        return list(torch._foreach_norm(list(tensors), ord))
    # One launch per precision class, the results put back in the tensors' order.
    out: list[Tensor | None] = [None] * len(tensors)
    for want_low in (True, False):
        index = [i for i, lp in enumerate(low) if lp == want_low]
        if index:
            dtype = torch.float32 if want_low else None
            for i, n in zip(index, torch._foreach_norm([tensors[i] for i in index], ord, dtype=dtype)):
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


def clip_coefficient(norm: Tensor, clip_level: float | Tensor) -> Tensor:
    """``min(1, λ / (‖g‖ + eps))`` on the device; λ = ∞ gives exactly 1.

    ``clip_level`` is the threshold λ of the step (clipped-SSTM's λ_k); the name is kept
    for the callers of this helper.
    """
    return torch.clamp(clip_level / (norm + EPS), max=1.0)


# ------------------------------------------------------------------------ code paths
# Scoped override for code that cannot reach the optimizer's keyword (a profiler census
# around a Lightning loop): a context variable, set and reset by device_code_path().
_FORCE_DEVICE_PATH: contextvars.ContextVar[bool] = contextvars.ContextVar("clipbench_device_path", default=False)


def host_path(clipping: str | Clipping, applied: Tensor, tensors: Sequence[Tensor], *,
              device_path: bool | None = None) -> bool:  # fmt: skip
    """Whether the clipped kernels take their host path for this step.

    That is: norm clipping, one skip flag for the whole step (not the convex suite's
    per-run masks), and every tensor in host memory (CPU), where reading a 0-dim tensor's
    value is a memory load, not a device synchronisation. The kernels then branch on a
    skipped step and pass the clip coefficient as a number instead of masking and scaling
    a copy of the gradients. On an accelerator everything stays on the device.

    Args:
        device_path: True runs the accelerator path on CPU tensors too (for auditing on a
            CPU what a GPU step would synchronise, and for testing that path); None
            (default) decides as above, unless inside :func:`device_code_path`.
    """
    if device_path or (device_path is None and _FORCE_DEVICE_PATH.get()):
        return False
    name = clipping.name if isinstance(clipping, Clipping) else clipping
    return name == "norm" and applied.dim() == 0 and all(t.device.type == "cpu" for t in tensors)


@contextlib.contextmanager
def device_code_path() -> Iterator[None]:
    """Within this block, optimizers built with ``device_path=None`` take the accelerator
    code path (no host reads) on CPU tensors as well, as ``device_path=True`` does."""
    token = _FORCE_DEVICE_PATH.set(True)
    try:
        yield
    finally:
        _FORCE_DEVICE_PATH.reset(token)


# ------------------------------------------------------------------------ the kinds
def _mask(tensors: Sequence[Tensor], mask: Tensor | None) -> list[Tensor]:
    # Zeros *before* any arithmetic: 0 · inf is NaN. One fused pass per tensor (torch has
    # no foreach `where`); no copy when the step is known to apply.
    return list(tensors) if mask is None else [torch.where(mask, g, 0.0) for g in tensors]


def _masked(factor: Tensor, mask: Tensor | None) -> Tensor:
    # The factors are masked too: λ / NaN is NaN, and NaN · 0 is NaN.
    return factor if mask is None else torch.where(mask, factor, 0.0)


def _ratio(clipped: Tensor, after: Tensor, total_norm: Tensor) -> Tensor:
    """‖clip(g)‖ / ‖g‖ on a clipped step, exactly 1 otherwise."""
    return torch.where(clipped, torch.clamp(after / total_norm, max=1.0), 1.0)


class Clipping:
    """One clipping kind (see the module docstring for the interface and the telemetry).

    Subclasses set :attr:`name` and :attr:`code` and implement :meth:`factor`,
    :meth:`apply`, :meth:`clipped_norm` and :meth:`stats`. Instances are stateless: the
    threshold λ is an argument, since clipped-SSTM's changes every step.
    """

    name: ClassVar[str]
    code: ClassVar[ClipCode]

    def measure(self, grads: Sequence[Tensor], *, foreach: bool = True) -> list[Tensor]:
        """The per-tensor l2 norms (every kind: the global norm decides the skip and is logged)."""
        return tensor_norms(grads, foreach=foreach)

    def factor(self, threshold: float | Tensor, *, norms: Sequence[Tensor],
               total_norm: Tensor) -> Tensor | list[Tensor] | None:  # fmt: skip
        """The multiplier of ``clip(g) = factor · g``: one 0-dim tensor, one per tensor, or
        None where clipping is not a scaling (``coordinate_wise``)."""
        raise NotImplementedError

    def apply(self, grads: Sequence[Tensor], threshold: float | Tensor, *, norms: Sequence[Tensor], total_norm: Tensor,
              mask: Tensor | None = None, foreach: bool = True) -> tuple[list[Tensor], Scale]:  # fmt: skip
        """``(tensors, scale)`` with ``clip(g) = scale · tensors``; zero when ``mask`` is False.

        Args:
            grads: the gradients (not modified).
            threshold: λ, a number or a 0-dim device tensor.
            norms, total_norm: the per-tensor and the global pre-clip norm (the global one
                is over every tensor of the optimizer, which may be more than ``grads``).
            mask: 0-dim bool tensor, False when the global norm is not finite; None when
                the step is known (on the host) to apply: then nothing is copied unless
                the kind must (``coordinate_wise`` clamps a copy).
        """
        factor = self.factor(threshold, norms=norms, total_norm=total_norm)
        if isinstance(factor, list):
            return _mask(grads, mask), [_masked(f, mask) for f in factor]
        return _mask(grads, mask), _masked(factor, mask)

    def clipped_norm(self, tensors: Sequence[Tensor], scale: Scale, *, norms: Sequence[Tensor],
                     foreach: bool = True) -> Tensor | None:  # fmt: skip
        """‖clip(g)‖ over these tensors, from :meth:`apply`'s output (None for ``norm``,
        whose factor already is the ratio)."""
        return None

    def stats(self, threshold: float | Tensor, *, grads: Sequence[Tensor], norms: Sequence[Tensor], total_norm: Tensor,
              clipped_norms: Sequence[Tensor | None], foreach: bool = True) -> tuple[Tensor, Tensor]:  # fmt: skip
        """``(clip_factor, clipped)`` of the step, as defined in the module docstring.

        Args:
            grads, norms: every pre-clip tensor of the step and its norm (all groups).
            total_norm: the global pre-clip norm.
            clipped_norms: :meth:`clipped_norm` per call of the update (one per group).
        """
        raise NotImplementedError


class NormClipping(Clipping):
    """``clip(g) = min(1, λ / ‖g‖) · g`` with ‖g‖ over every tensor of the optimizer."""

    name = "norm"
    code = ClipCode.NORM

    def factor(self, threshold, *, norms, total_norm):
        return clip_coefficient(total_norm, threshold)

    def stats(self, threshold, *, grads, norms, total_norm, clipped_norms, foreach=True):
        factor = clip_coefficient(total_norm, threshold)
        clipped = (total_norm > 0) & (factor < 1)
        return torch.where(clipped, factor, 1.0), clipped


class LayerWiseClipping(Clipping):
    """``clip(g_t) = min(1, λ / ‖g_t‖) · g_t`` for each tensor t."""

    name = "layer_wise"
    code = ClipCode.LAYER_WISE

    def factor(self, threshold, *, norms, total_norm):
        return [clip_coefficient(n, threshold) for n in norms]

    def clipped_norm(self, tensors, scale, *, norms, foreach=True):
        # ‖clip(g_t)‖ = factor_t · ‖g_t‖: no pass over the tensors.
        return global_norm([f * n for f, n in zip(scale, norms)]) if norms else None

    def stats(self, threshold, *, grads, norms, total_norm, clipped_norms, foreach=True):
        factors = self.factor(threshold, norms=norms, total_norm=total_norm)
        scaled = torch.stack([(n > 0) & (f < 1) for n, f in zip(norms, factors)])
        clipped = scaled.any()
        return _ratio(clipped, global_norm([f * n for f, n in zip(factors, norms)]), total_norm), clipped


class CoordinateWiseClipping(Clipping):
    """``clip(g)_i = clamp(g_i, -λ, λ)``."""

    name = "coordinate_wise"
    code = ClipCode.COORDINATE_WISE

    def factor(self, threshold, *, norms, total_norm):
        return None

    def apply(self, grads, threshold, *, norms, total_norm, mask=None, foreach=True):
        if mask is None:
            out = [g.clone() for g in grads]
        else:
            out = _mask(grads, mask)
        if isinstance(threshold, Tensor):
            for d in out:
                torch.clamp(d, -threshold, threshold, out=d)
        elif foreach:
            torch._foreach_clamp_min_(out, -threshold)
            torch._foreach_clamp_max_(out, threshold)
        else:
            for d in out:
                d.clamp_(-threshold, threshold)
        return out, 1.0

    def clipped_norm(self, tensors, scale, *, norms, foreach=True):
        # One extra read of the clipped tensors (the fused kernels sum it in their pass).
        return global_norm(tensor_norms(tensors, foreach=foreach)) if tensors else None

    def stats(self, threshold, *, grads, norms, total_norm, clipped_norms, foreach=True):
        # ‖g‖_∞ > λ exactly: comparing norms before and after would also count rounding.
        peaks = tensor_norms(grads, foreach=foreach, ord=float("inf"))
        clipped = torch.stack(peaks).amax() > threshold
        after = global_norm([n for n in clipped_norms if n is not None])
        return _ratio(clipped, after, total_norm), clipped


_KINDS: dict[str, Clipping] = {k.name: k for k in (NormClipping(), LayerWiseClipping(), CoordinateWiseClipping())}
CLIPPING_KINDS = tuple(_KINDS)


def get_clipping(clipping: str | Clipping) -> Clipping:
    """The :class:`Clipping` for a name of :data:`CLIPPING_KINDS` (an instance passes through).

    Raises:
        ValueError: an unknown name.
    """
    if isinstance(clipping, Clipping):
        return clipping
    kind = _KINDS.get(clipping)
    if kind is None:
        raise ValueError(f"Invalid clipping: {clipping!r} (must be one of {CLIPPING_KINDS})")
    return kind


def clip_gradients(grads: Sequence[Tensor], threshold: float | Tensor, clipping: str | Clipping, *,
                   norms: Sequence[Tensor], total_norm: Tensor, applied: Tensor,
                   scale: float | Tensor = 1.0, foreach: bool = True) -> tuple[list[Tensor], Tensor | None]:  # fmt: skip
    """New tensors ``scale · clip(g, λ)``, all zero when ``applied`` is False, for kernels
    that need the clipped gradient itself (NSGD-M's momentum, clipped Adam's moments).

    Returns:
        ``(clipped, clipped_norm)``: one new tensor per gradient, and ``‖clip(g)‖`` over
        them (:meth:`Clipping.clipped_norm`: None for ``norm``), for :meth:`Clipping.stats`.
    """
    kind = get_clipping(clipping)
    tensors, factor = kind.apply(grads, threshold, norms=norms, total_norm=total_norm, mask=applied, foreach=foreach)
    clipped_norm = kind.clipped_norm(tensors, factor, norms=norms, foreach=foreach)
    if isinstance(factor, list):
        for t, f in zip(tensors, factor):
            t.mul_(f * scale)
    elif not (isinstance(factor, float) and factor == 1.0 and isinstance(scale, float) and scale == 1.0):
        multiplier = factor * scale
        if foreach:
            torch._foreach_mul_(tensors, multiplier)
        else:
            for t in tensors:
                t.mul_(multiplier)
    return tensors, clipped_norm
