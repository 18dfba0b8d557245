"""Fused update kernels for clipped-SGD and clipped-SSTM (Triton), and a ``torch.compile`` variant.

The ``_foreach_*`` kernels of :mod:`optim.clipped_sgd` / :mod:`optim.clipped_sstm` make a
pass per foreach op (non-finite mask, clip, weight decay, momentum, update, average). The
kernels here do the same arithmetic in ONE pass that reads each operand once and writes
each output once, for all tensors of a dtype in ONE launch (clipped-SGD: read g, x, (b),
(x̄), write x, (b), (x̄); clipped-SSTM: read g, y, z, write z, y, x). With the norm pass
before it (``torch._foreach_norm``) that is the minimum: the global norm, and whether it
is finite, must be known before any coordinate moves.

Launch structure (torch's ``_fused_adam`` / apex's ``multi_tensor_apply``, adapted to
Triton's fixed argument lists): one program per ``BLOCK`` elements of one tensor; an int64
device table holds each operand's address per tensor, each tensor's size and each
program's (tensor, offset). The table is built once per set of addresses and cached (the
caching allocator hands the gradients the same addresses step after step), so a step is
one launch per dtype with no transfer. Every per-step scalar (global norm, ``applied``,
per-tensor norms, α, λ, lerp and average weights) is read by the kernel from device
memory: no host read, a fixed launch configuration, and CUDA-graph capture works (a table
built during capture is copied from a pinned buffer set aside by an earlier step outside
capture, and plans a graph uses are never evicted).
lr, momentum and weight decay are Python floats as in the foreach path: a graph replays
the values it was captured with. Full blocks are unmasked, so aligned tensors get 128-bit
accesses. Arithmetic is float32 for float32/bfloat16/float16 parameters (the foreach path
rounds intermediates to the parameter dtype; results agree to that rounding). Tensors
must be dense and laid out like their parameter (as autograd and ``preserve_format`` make them).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from .clipping import CLIPPING_KINDS, EPS, global_norm

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch wheels for CUDA ship triton
    triton = None

__all__ = [
    "BACKENDS",
    "SUPPORTED_DTYPES",
    "fused_clipped_sgd",
    "fused_clipped_sstm",
    "fused_support",
    "set_backend",
]

BACKENDS = ("triton", "compile")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# 8 elements (two 128-bit accesses per operand) per thread: ptxas (sm_90) gives these
# kernels 40-48 registers, against ~150 at 16 per thread (one block per SM). The
# environment overrides let a GPU session sweep them.
BLOCK = int(os.environ.get("CLIPBENCH_FUSED_BLOCK", "2048"))
NUM_WARPS = int(os.environ.get("CLIPBENCH_FUSED_WARPS", "8"))
_MAX_PLANS = 16
_CLIPPING_CODE = {kind: i for i, kind in enumerate(CLIPPING_KINDS)}  # norm 0, layer_wise 1, coordinate_wise 2
# triton.jit reads TRITON_INTERPRET when a kernel is defined, i.e. at import.
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
_backend = os.environ.get("CLIPBENCH_FUSED_BACKEND", "triton")
if _backend not in BACKENDS:
    raise ValueError(f"Invalid CLIPBENCH_FUSED_BACKEND: {_backend!r} (must be one of {', '.join(BACKENDS)})")
_compile_options: dict[str, Any] = {}


def set_backend(name: str, **compile_options: Any) -> None:
    """Select what the fused path runs: ``"triton"`` (default) or ``"compile"``.

    Args:
        name: one of :data:`BACKENDS`.
        **compile_options: inductor options for ``"compile"`` (e.g. ``combo_kernels=True``,
            which fuses the per-tensor kernels horizontally).

    Raises:
        ValueError: unknown name.
    """
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"Invalid fused backend: {name!r} (must be one of {', '.join(BACKENDS)})")
    _backend = name
    if compile_options != _compile_options:
        _compile_options.clear()
        _compile_options.update(compile_options)
        _compiled.cache_clear()


def fused_support(tensors: Sequence[Tensor]) -> str | None:
    """Why the fused path cannot run on ``tensors``, or None when it can.

    The Triton kernels run on CUDA tensors of a supported dtype; on CPU tensors only under
    the Triton interpreter (``TRITON_INTERPRET=1`` when this module is imported), which is
    how the tests run them. The ``compile`` backend runs anywhere.
    """
    if _backend == "compile":
        return None
    if triton is None:
        return "triton is not installed"
    for t in tensors:  # once per step: attribute reads only
        if t.dtype not in SUPPORTED_DTYPES:
            return f"dtype {t.dtype} is not supported (float32, bfloat16, float16)"
        if not (t.is_cpu if INTERPRETED else t.is_cuda):
            where = "on CPU (TRITON_INTERPRET=1)" if INTERPRETED else "on CUDA (on CPU only with TRITON_INTERPRET=1)"
            return f"tensors must all be {where}; found one on {t.device}"
    return None


# ----------------------------------------------------------------------------- kernels
if triton is not None:
    _EPS = tl.constexpr(EPS)

    @triton.jit
    def _operand(addr, row, n_tensors, t, DT: tl.constexpr, ALIGNED: tl.constexpr):
        ptr = tl.load(addr + row * n_tensors + t).to(tl.pointer_type(DT))
        if ALIGNED:  # lets full blocks use 128-bit loads and stores
            ptr = tl.multiple_of(ptr, 16)
        return ptr

    @triton.jit
    def _ld(ptr, offs, mask, FULL: tl.constexpr):
        if FULL:
            v = tl.load(ptr + offs)
        else:
            v = tl.load(ptr + offs, mask=mask, other=0.0)
        return v.to(tl.float32)

    @triton.jit
    def _st(ptr, offs, value, mask, FULL: tl.constexpr):
        if FULL:
            tl.store(ptr + offs, value.to(ptr.dtype.element_ty))
        else:
            tl.store(ptr + offs, value.to(ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _add(a, b):
        return a + b

    # tl.sum's own combine function, passed to tl.reduce directly: tl.sum is a jit function
    # bound when triton is imported, which the interpreter cannot call if triton came in
    # before TRITON_INTERPRET was set (the tests reload this module), while tl.reduce with
    # this combine takes the interpreter's numpy fast path and compiles to what tl.sum does.
    _SUM_COMBINE = getattr(tl.standard, "_sum_combine", _add)

    @triton.jit
    def _sum(x):
        return tl.reduce(x, 0, _SUM_COMBINE)

    @triton.jit
    def _lerp(a, b, w):
        # torch.lerp's formula, exact at w = 0 and w = 1.
        return tl.where(w < 0.5, a + w * (b - a), b - (b - a) * (1.0 - w))

    @triton.jit
    def _prologue(block_tensor, block_start, numels, applied, total_norm, norms, level_ptr, level, stats,
                  CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, BLOCK: tl.constexpr):
        """Per program: (t, start, n, ok, λ, clip factor in float64 for norm/layer_wise)."""
        pid = tl.program_id(0)
        t = tl.load(block_tensor + pid)
        start = tl.multiple_of(tl.load(block_start + pid), BLOCK)  # with ALIGNED: 128-bit accesses
        n = tl.load(numels + t)
        ok = tl.load(applied) != 0
        if LEVEL_PTR:
            lam = tl.load(level_ptr).to(tl.float64)
        else:
            lam = tl.cast(level, tl.float64)  # a Python float under the interpreter
        if CLIPPING == 1:
            norm = tl.load(norms + t).to(tl.float64)
        else:
            norm = tl.load(total_norm).to(tl.float64)
        # min(1, λ/(‖g‖+eps)), and 0 on a skipped step: λ/NaN is NaN and NaN·0 is NaN.
        factor = tl.where(ok, tl.minimum(lam / (norm + _EPS), 1.0), 0.0)
        if CLIPPING == 1:  # ‖clip(g_t)‖ = factor·‖g_t‖, written once per tensor
            tl.store(stats + t, (factor * norm).to(tl.float32), mask=start == 0)
        return t, start, n, ok, lam, factor

    @triton.jit
    def _clip(g, ok, lam, scale, CLIPPING: tl.constexpr):
        g = tl.where(ok, g, 0.0)  # before any arithmetic: 0·inf is NaN
        if CLIPPING == 2:
            d = tl.minimum(tl.maximum(g, -lam), lam)
        else:
            d = g * scale
        return d

    @triton.jit
    def _sgd_block(x_p, g_p, b_p, a_p, offs, mask, ok, okf, lam, scale, lr, momentum, weight_decay, avg_w,
                   CLIPPING: tl.constexpr, MOMENTUM: tl.constexpr, WEIGHT_DECAY: tl.constexpr,
                   AVERAGE: tl.constexpr, FULL: tl.constexpr):
        x = _ld(x_p, offs, mask, FULL)
        d = _clip(_ld(g_p, offs, mask, FULL), ok, lam, scale, CLIPPING)
        sumsq = _sum(d * d)
        if AVERAGE:  # x̄ ← lerp(x̄, xᵏ, 1/(k+1)), before x moves
            _st(a_p, offs, _lerp(_ld(a_p, offs, mask, FULL), x, avg_w), mask, FULL)
        if WEIGHT_DECAY:
            d = d + weight_decay * x * okf
        if MOMENTUM:
            # μ on an applied step, 1 on a skipped one: b stays as it was.
            b = _ld(b_p, offs, mask, FULL) * (1.0 + okf * (momentum - 1.0)) + d
            _st(b_p, offs, b, mask, FULL)
            x = x + (-lr) * b * okf
        else:
            x = x + (-lr) * d
        _st(x_p, offs, x, mask, FULL)
        return sumsq

    @triton.jit
    def _clipped_sgd_kernel(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                            level_ptr, avg_weight, stats, level, lr, momentum, weight_decay,
                            CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, MOMENTUM: tl.constexpr,
                            WEIGHT_DECAY: tl.constexpr, AVERAGE: tl.constexpr, X_DT: tl.constexpr,
                            G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
        t, start, n, ok, lam, factor = _prologue(block_tensor, block_start, numels, applied, total_norm, norms,
                                                 level_ptr, level, stats, CLIPPING, LEVEL_PTR, BLOCK)
        x_p = _operand(addr, 0, n_tensors, t, X_DT, ALIGNED)
        g_p = _operand(addr, 1, n_tensors, t, G_DT, ALIGNED)
        b_p = x_p  # placeholders for absent operands: never touched (constexpr-pruned)
        a_p = x_p
        avg_w = 0.0
        if MOMENTUM:
            b_p = _operand(addr, 2, n_tensors, t, X_DT, ALIGNED)
        if AVERAGE:  # rows: x, g, [b], x̄
            if MOMENTUM:
                a_p = _operand(addr, 3, n_tensors, t, X_DT, ALIGNED)
            else:
                a_p = _operand(addr, 2, n_tensors, t, X_DT, ALIGNED)
            avg_w = tl.load(avg_weight).to(tl.float32)
        okf = ok.to(tl.float32)
        lam32 = lam.to(tl.float32)
        scale = factor.to(tl.float32)
        offs = start + tl.arange(0, BLOCK)
        if start + BLOCK <= n:
            sumsq = _sgd_block(x_p, g_p, b_p, a_p, offs, offs < n, ok, okf, lam32, scale, lr, momentum,
                               weight_decay, avg_w, CLIPPING, MOMENTUM, WEIGHT_DECAY, AVERAGE, True)
        else:
            sumsq = _sgd_block(x_p, g_p, b_p, a_p, offs, offs < n, ok, okf, lam32, scale, lr, momentum,
                               weight_decay, avg_w, CLIPPING, MOMENTUM, WEIGHT_DECAY, AVERAGE, False)
        if CLIPPING == 2:  # ‖clip(g)‖² of this block; the caller sums the blocks (one small reduction)
            tl.store(stats + tl.program_id(0), sumsq)

    @triton.jit
    def _sstm_block(x_p, g_p, y_p, z_p, offs, mask, ok, lam, scale, neg_alpha, w_y, w_x,
                    CLIPPING: tl.constexpr, FULL: tl.constexpr):
        d = _clip(_ld(g_p, offs, mask, FULL), ok, lam, scale, CLIPPING)
        sumsq = _sum(d * d)
        if CLIPPING == 2:
            d = d * neg_alpha  # norm/layer_wise fold -α into `scale`
        z = _ld(z_p, offs, mask, FULL) + d
        y = _lerp(_ld(y_p, offs, mask, FULL), z, w_y)
        _st(z_p, offs, z, mask, FULL)
        _st(y_p, offs, y, mask, FULL)
        _st(x_p, offs, _lerp(y, z, w_x), mask, FULL)
        return sumsq

    @triton.jit
    def _clipped_sstm_kernel(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                             level_ptr, alpha, y_weight, x_weight, stats, level,
                             CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, X_DT: tl.constexpr,
                             G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
        t, start, n, ok, lam, factor = _prologue(block_tensor, block_start, numels, applied, total_norm, norms,
                                                 level_ptr, level, stats, CLIPPING, LEVEL_PTR, BLOCK)
        x_p = _operand(addr, 0, n_tensors, t, X_DT, ALIGNED)
        g_p = _operand(addr, 1, n_tensors, t, G_DT, ALIGNED)
        y_p = _operand(addr, 2, n_tensors, t, X_DT, ALIGNED)
        z_p = _operand(addr, 3, n_tensors, t, X_DT, ALIGNED)
        neg_alpha64 = -tl.load(alpha).to(tl.float64)
        scale = (factor * neg_alpha64).to(tl.float32)
        neg_alpha = neg_alpha64.to(tl.float32)
        w_y = tl.load(y_weight).to(tl.float32)
        w_x = tl.load(x_weight).to(tl.float32)
        lam32 = lam.to(tl.float32)
        offs = start + tl.arange(0, BLOCK)
        if start + BLOCK <= n:
            sumsq = _sstm_block(x_p, g_p, y_p, z_p, offs, offs < n, ok, lam32, scale, neg_alpha, w_y, w_x,
                                CLIPPING, True)
        else:
            sumsq = _sstm_block(x_p, g_p, y_p, z_p, offs, offs < n, ok, lam32, scale, neg_alpha, w_y, w_x,
                                CLIPPING, False)
        if CLIPPING == 2:
            tl.store(stats + tl.program_id(0), sumsq)


# ------------------------------------------------------------------------ launch plans
@dataclass
class _Plan:
    """Device tables for the tensors of one dtype (see the module docstring)."""

    index: list[int]  # which tensors of the call
    x_dtype: Any  # triton dtypes of the parameters (and state) and of the gradients
    g_dtype: Any
    addr: Tensor  # int64 [rows, n]: operand addresses
    numels: Tensor  # int64 [n]
    block_tensor: Tensor  # int64 [blocks]
    block_start: Tensor  # int64 [blocks]
    stats: Tensor  # float32 [max(blocks, n)]: per-block ‖clip(g)‖² or per-tensor ‖clip(g_t)‖
    n: int
    blocks: int
    aligned: bool
    host: Tensor | None  # the pinned source of the tables: a graph's memcpy node reads it
    captured: bool = False  # used in a CUDA graph: its tables must outlive the cache


_cache: OrderedDict[tuple, list[_Plan]] = OrderedDict()
# Pinned buffers set aside outside capture: pinned memory cannot be allocated while a
# stream is being captured, but a table built then must be copied from pinned memory.
_spares: list[Tensor] = []
_MAX_SPARES = 4


def _dense(t: Tensor) -> bool:
    """Non-overlapping and dense: the elements fill ``numel()`` consecutive slots."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _plans(rows: Sequence[Sequence[Tensor]]) -> list[_Plan]:
    """The cached plans for ``rows`` (operand lists, the parameters first), one per
    (parameter dtype, gradient dtype), built when the addresses are new.

    The key is every operand's address: a step costs one lookup (a few µs per tensor).

    Raises:
        ValueError: a tensor is not dense, or an operand's size, strides, dtype or device
            differ from its parameter's.
    """
    key = (BLOCK, *map(len, rows), *map(Tensor.data_ptr, chain.from_iterable(rows)))
    capturing = rows[0][0].is_cuda and torch.cuda.is_current_stream_capturing()
    plans = _cache.get(key)
    if plans is not None:
        _cache.move_to_end(key)
        for plan in plans if capturing else ():
            plan.captured = True
        return plans
    xs = rows[0]
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(xs):
        if not _dense(x) or x.device != xs[0].device:
            raise ValueError(f"fused: parameter {i} ({tuple(x.shape)}, {x.stride()}, {x.device}) is not dense "
                             f"or not on {xs[0].device}; use fused=False")  # fmt: skip
        for r, row in enumerate(rows[1:], 1):
            t = row[i]
            if t.shape != x.shape or t.stride() != x.stride() or t.device != x.device:
                raise ValueError(
                    f"fused: operand {r} of parameter {i} has shape {tuple(t.shape)}, strides {t.stride()} on "
                    f"{t.device}; the parameter has {tuple(x.shape)}, {x.stride()} on {x.device}. "
                    "Use fused=False for such tensors."
                )
            if r > 1 and t.dtype != x.dtype:
                raise ValueError(f"fused: state {r} of parameter {i} is {t.dtype}, the parameter {x.dtype}")
        groups.setdefault((x.dtype, rows[1][i].dtype), []).append(i)
    plans = [_build([[row[i] for i in index] for row in rows], index, capturing) for index in groups.values()]
    _cache[key] = plans
    # Evict the oldest plan no graph uses (a replay would read freed tables).
    old = next((k for k, v in _cache.items() if not any(p.captured for p in v)), None)
    if len(_cache) > _MAX_PLANS and old is not None:
        del _cache[old]
    return plans


def _build(rows: list[list[Tensor]], index: list[int], capturing: bool) -> _Plan:
    numels = [x.numel() for x in rows[0]]
    starts = [(i, s) for i, m in enumerate(numels) for s in range(0, m, BLOCK)]
    host = torch.tensor(
        [t.data_ptr() for row in rows for t in row] + numels + [i for i, _ in starts] + [s for _, s in starts],
        dtype=torch.int64,
    )
    device = rows[0][0].device
    if device.type != "cuda":
        table, host = host, None
    else:  # pinned + non_blocking: no host sync, and a legal memcpy node during capture
        host = _pinned(host, capturing)
        table = torch.empty(host.shape, dtype=host.dtype, device=device).copy_(host, non_blocking=True)
    n, b, r = len(numels), len(starts), len(rows)
    return _Plan(
        index=index,
        x_dtype=_tl(rows[0][0].dtype),
        g_dtype=_tl(rows[1][0].dtype),
        addr=table[: r * n],
        numels=table[r * n : (r + 1) * n],
        block_tensor=table[(r + 1) * n : (r + 1) * n + b],
        block_start=table[(r + 1) * n + b :],
        stats=torch.zeros(max(b, n), dtype=torch.float32, device=device),
        n=n,
        blocks=b,
        aligned=all(t.data_ptr() % 16 == 0 for row in rows for t in row),
        host=host,
    )


def _pinned(host: Tensor, capturing: bool) -> Tensor:
    """``host`` in pinned memory: a fresh buffer outside capture (and one set aside for
    a later capture), a set-aside buffer during capture."""
    if not capturing:
        if len(_spares) < _MAX_SPARES:
            _spares.append(torch.empty(host.numel(), dtype=host.dtype, pin_memory=True))
        return host.pin_memory()
    spare = next((b for b in _spares if b.numel() >= host.numel()), None)
    if spare is None:
        raise RuntimeError(
            "fused: a CUDA graph is capturing a step on tensors of a size the fused kernels have not run on "
            "outside capture; run one step before capturing (as torch.cuda.graphs asks for warm-up anyway)"
        )
    _spares.remove(spare)  # the graph's memcpy node reads it at every replay: never reused
    return spare[: host.numel()].copy_(host)


def _tl(dtype: torch.dtype) -> Any:
    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]


@torch.compiler.disable  # plan caching reads addresses: nothing for dynamo to trace
def _run(kernel, clipping: str, rows: list[list[Tensor]], norms: Sequence[Tensor], total_norm: Tensor,
         applied: Tensor, clip_level: float | Tensor, pointers: tuple, floats: tuple, flags: dict) -> Tensor | None:
    """One launch per dtype group; returns ``‖clip(g)‖`` over ``rows[1]`` (None for ``norm``)."""
    code = _CLIPPING_CODE.get(clipping)
    if code is None:
        raise ValueError(f"Invalid clipping: {clipping!r} (must be one of {CLIPPING_KINDS})")
    # λ is a device tensor for clipped-SSTM (B/α_k) and a float for clipped-SGD; the unused
    # argument gets a placeholder that the kernel never reads.
    level_is_ptr = isinstance(clip_level, Tensor)
    level_ptr, level = (clip_level, 0.0) if level_is_ptr else (total_norm, float(clip_level))
    parts = []
    guard = torch.cuda.device(total_norm.device) if total_norm.is_cuda else contextlib.nullcontext()
    with guard:  # Triton launches on the current device
        for plan in _plans(rows):
            # layer_wise reads the per-tensor norms from one buffer: one small launch.
            group_norms = torch.stack([norms[i] for i in plan.index]) if code == 1 else total_norm
            if plan.blocks == 0:  # only empty tensors: nothing to update (and no empty grid)
                parts.append(plan.stats[:0].sum())
                continue
            kernel[(plan.blocks,)](
                plan.addr, plan.numels, plan.block_tensor, plan.block_start, plan.n, applied, total_norm,
                group_norms, level_ptr, *pointers, plan.stats, level, *floats,
                CLIPPING=code, LEVEL_PTR=level_is_ptr, X_DT=plan.x_dtype, G_DT=plan.g_dtype,
                BLOCK=BLOCK, ALIGNED=plan.aligned, num_warps=NUM_WARPS, **flags,
            )  # fmt: skip
            if code == 1:
                parts.append(torch.linalg.vector_norm(plan.stats[: plan.n]))
            elif code == 2:
                parts.append(plan.stats[: plan.blocks].sum().sqrt())
    if code == 0:
        return None
    out = parts[0] if len(parts) == 1 else global_norm(parts)
    if code == 1 and level_is_ptr:  # the foreach path's factors take λ's dtype (float64)
        out = out.to(torch.promote_types(out.dtype, clip_level.dtype))
    return out


def fused_clipped_sgd(
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
    norms: list[Tensor],
    total_norm: Tensor,
    applied: Tensor,
    average_weight: Tensor | None = None,
) -> Tensor | None:
    """:func:`optim.clipped_sgd.clipped_sgd` in one pass: same arguments, same result.

    Per coordinate: d = clip(g) (0 when ``applied`` is False), x̄ ← lerp(x̄, x, 1/(k+1)),
    d += w·x, b ← μ·b + d, x ← x - γ·b (x - γ·d without momentum).

    Args:
        params, grads, momentum_buffers, averages: x, g, b, x̄; one device, dense, each
            operand laid out like its parameter.
        lr, clip_level, momentum, weight_decay, clipping: γ, λ, μ, w, the clipping kind.
        norms, total_norm, applied: per-tensor and global pre-clip norms and the
            finiteness mask (0-dim device tensors, as the optimizer computes them).
        average_weight: 1/(k+1) (0 on a skipped step), a 0-dim device tensor.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise`` (computed in
        the same pass), None for ``norm``.

    Raises:
        ValueError: missing buffers, an invalid clipping kind, or tensors the kernel
            cannot address (not dense, or laid out unlike their parameter).
    """
    if momentum and momentum_buffers is None:
        raise ValueError("fused_clipped_sgd: momentum > 0 needs momentum_buffers")
    if averages is not None and average_weight is None:
        raise ValueError("fused_clipped_sgd: averages need an average_weight")
    if _backend == "compile":
        return _compiled("sgd")(
            params, grads, momentum_buffers, averages, lr=lr, clip_level=clip_level, momentum=momentum,
            weight_decay=weight_decay, clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
            average_weight=average_weight,
        )  # fmt: skip
    rows = [list(params), list(grads)] + [list(s) for s in (momentum_buffers if momentum else None, averages) if s]
    flags = dict(MOMENTUM=bool(momentum), WEIGHT_DECAY=bool(weight_decay), AVERAGE=averages is not None)
    return _run(_clipped_sgd_kernel, clipping, rows, norms, total_norm, applied, clip_level,
                (total_norm if average_weight is None else average_weight,),
                (float(lr), float(momentum), float(weight_decay)), flags)


def fused_clipped_sstm(
    params: list[Tensor],
    grads: list[Tensor],
    ys: list[Tensor],
    zs: list[Tensor],
    *,
    alpha: Tensor,
    clip_level: Tensor | float,
    y_weight: Tensor,
    x_weight: Tensor,
    clipping: str = "norm",
    norms: list[Tensor],
    total_norm: Tensor,
    applied: Tensor,
) -> Tensor | None:
    """:func:`optim.clipped_sstm.clipped_sstm` in one pass: same arguments, same result.

    Per coordinate: z ← z - α·clip(g, λ), y ← lerp(y, z, y_weight), x ← lerp(y, z, x_weight).

    Args:
        params, grads, ys, zs: x, g, y, z; one device, dense, laid out like x.
        alpha, clip_level, y_weight, x_weight: α_{k+1}, λ_{k+1} (device tensor or float),
            α_{k+1}/A_{k+1} (0 when skipped) and α_{k+2}/A_{k+2}: 0-dim tensors of any float
            dtype (the optimizer keeps its schedule in float64), read by the kernel.
        clipping, norms, total_norm, applied: as in :func:`fused_clipped_sgd`.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise``, else None.

    Raises:
        ValueError: an invalid clipping kind, or tensors the kernel cannot address.
    """
    if _backend == "compile":
        return _compiled("sstm")(
            params, grads, ys, zs, alpha=alpha, clip_level=clip_level, y_weight=y_weight, x_weight=x_weight,
            clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
        )  # fmt: skip
    return _run(_clipped_sstm_kernel, clipping, [list(params), list(grads), list(ys), list(zs)], norms,
                total_norm, applied, clip_level, (alpha, y_weight, x_weight), (), {})


@functools.lru_cache(maxsize=None)
def _compiled(kind: str) -> Callable[..., Tensor | None]:
    """``torch.compile`` of the foreach functional itself, so the math stays written once."""
    if kind == "sgd":
        from .clipped_sgd import clipped_sgd as functional
    else:
        from .clipped_sstm import clipped_sstm as functional

    def foreach_step(*args: Any, **kwargs: Any) -> Tensor | None:
        return functional(*args, foreach=True, **kwargs)

    return torch.compile(foreach_step, dynamic=False, options=dict(_compile_options) or None)
