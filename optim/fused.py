"""Fused update kernels for clipped-SGD and clipped-SSTM (Triton), and a ``torch.compile`` variant.

The kernels of :mod:`optim.kernels` make a pass per foreach op (non-finite mask, clip,
weight decay, momentum, update, average). The kernels here do the same arithmetic in ONE
pass that reads each operand once and writes each output once, for all tensors of a dtype
in ONE launch (clipped-SGD: read g, x, (b), (x̄), write x, (b), (x̄); clipped-SSTM: read g,
y, z, write z, y, x). With the norm pass before it (``torch._foreach_norm``) that is the
minimum: the global norm, and whether it is finite, must be known before any coordinate
moves. How a launch addresses its tensors is :mod:`optim.fused_plans`.

Every per-step scalar (global norm, ``applied``, per-tensor norms, α, λ, lerp and average
weights) is read by the kernel from device memory: no host read, a fixed launch
configuration, and CUDA-graph capture works. lr, momentum and weight decay are Python
floats as in the foreach path: a graph replays the values it was captured with. Full
blocks are unmasked, so aligned tensors get 128-bit accesses. Arithmetic is float32 for
float32/bfloat16/float16 parameters (the foreach path rounds intermediates to the parameter
dtype; results agree to that rounding); the accumulators x̄, y, z may be float32 under
bf16/fp16 parameters (one kernel variant each). Tensors must be dense and laid out like
their parameter (as autograd and ``preserve_format`` make them).

Configuration is explicit (:mod:`optim.fused_config`): a :class:`FusedConfig` passed as
``config=``, else the selection of :func:`set_backend`. The Triton interpreter is Triton's
own switch (``TRITON_INTERPRET=1`` when ``triton.jit`` defines the kernels, i.e. when this
module is imported): :data:`INTERPRETED` reads it off the kernels.

Why this module is over 400 lines: the Triton kernels (about half of it) and the launch
that picks their variants belong together, and the kernels must live in the module that
is re-imported to switch the interpreter on; the launch tables (:mod:`optim.fused_plans`),
the configuration and the PyTorch kernels (:mod:`optim.kernels`) are already elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from . import fused_plans
from .clipping import EPS, ClipCode, get_clipping, global_norm
from .fused_config import (
    BACKENDS,
    BLOCK,
    NUM_WARPS,
    SUPPORTED_DTYPES,
    FusedConfig,
    selected_config,
    set_backend,
    support_reason,
)
from .kernels import sgd_update, sstm_update

try:
    import triton
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
except ImportError:  # pragma: no cover - torch wheels for CUDA ship triton
    triton = None

__all__ = [
    "BACKENDS",
    "BLOCK",
    "INTERPRETED",
    "NUM_WARPS",
    "SUPPORTED_DTYPES",
    "FusedConfig",
    "fused_clipped_sgd",
    "fused_clipped_sstm",
    "fused_support",
    "selected_config",
    "set_backend",
]

_cache = fused_plans.plan_cache  # the launch tables (tests inspect them)


def fused_support(tensors: Sequence[Tensor], config: FusedConfig | None = None) -> str | None:
    """Why the fused path cannot run on ``tensors``, or None when it can.

    The Triton kernels run on CUDA tensors of a supported dtype; on CPU tensors only under
    the Triton interpreter (``TRITON_INTERPRET=1`` when this module is imported), which is
    how the tests run them. The ``compile`` backend runs anywhere.
    """
    return support_reason(tensors, config, triton_installed=triton is not None, interpreted=INTERPRETED)


# ----------------------------------------------------------------------------- kernels
if triton is not None:
    _EPS = tl.constexpr(EPS)
    # The clipping kinds' codes, from the one table in optim.clipping.
    _LAYER_WISE = tl.constexpr(int(ClipCode.LAYER_WISE))
    _COORDINATE_WISE = tl.constexpr(int(ClipCode.COORDINATE_WISE))

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
        if CLIPPING == _LAYER_WISE:
            norm = tl.load(norms + t).to(tl.float64)
        else:
            norm = tl.load(total_norm).to(tl.float64)
        # min(1, λ/(‖g‖+eps)), and 0 on a skipped step: λ/NaN is NaN and NaN·0 is NaN.
        factor = tl.where(ok, tl.minimum(lam / (norm + _EPS), 1.0), 0.0)
        if CLIPPING == _LAYER_WISE:  # ‖clip(g_t)‖ = factor·‖g_t‖, written once per tensor
            tl.store(stats + t, (factor * norm).to(tl.float32), mask=start == 0)
        return t, start, n, ok, lam, factor

    @triton.jit
    def _clip(g, ok, lam, scale, CLIPPING: tl.constexpr):
        g = tl.where(ok, g, 0.0)  # before any arithmetic: 0·inf is NaN
        if CLIPPING == _COORDINATE_WISE:
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
        """x̄ in the parameters' dtype."""
        _clipped_sgd_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                             level_ptr, avg_weight, stats, level, lr, momentum, weight_decay, CLIPPING, LEVEL_PTR,
                             MOMENTUM, WEIGHT_DECAY, AVERAGE, X_DT, G_DT, BLOCK, ALIGNED, X_DT)

    @triton.jit
    def _clipped_sgd_kernel_f32_average(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm,
                                        norms, level_ptr, avg_weight, stats, level, lr, momentum, weight_decay,
                                        CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, MOMENTUM: tl.constexpr,
                                        WEIGHT_DECAY: tl.constexpr, AVERAGE: tl.constexpr, X_DT: tl.constexpr,
                                        G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
        """x̄ in float32 (bf16/fp16 parameters)."""
        _clipped_sgd_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                             level_ptr, avg_weight, stats, level, lr, momentum, weight_decay, CLIPPING, LEVEL_PTR,
                             MOMENTUM, WEIGHT_DECAY, AVERAGE, X_DT, G_DT, BLOCK, ALIGNED, tl.float32)

    @triton.jit
    def _clipped_sgd_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                             level_ptr, avg_weight, stats, level, lr, momentum, weight_decay,
                             CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, MOMENTUM: tl.constexpr,
                             WEIGHT_DECAY: tl.constexpr, AVERAGE: tl.constexpr, X_DT: tl.constexpr,
                             G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr, S_DT: tl.constexpr):
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
                a_p = _operand(addr, 3, n_tensors, t, S_DT, ALIGNED)
            else:
                a_p = _operand(addr, 2, n_tensors, t, S_DT, ALIGNED)
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
        if CLIPPING == _COORDINATE_WISE:  # ‖clip(g)‖² of this block; the caller sums the blocks
            tl.store(stats + tl.program_id(0), sumsq)

    @triton.jit
    def _sstm_block(x_p, g_p, y_p, z_p, offs, mask, ok, lam, scale, neg_alpha, w_y, w_x,
                    CLIPPING: tl.constexpr, FULL: tl.constexpr):
        d = _clip(_ld(g_p, offs, mask, FULL), ok, lam, scale, CLIPPING)
        sumsq = _sum(d * d)
        if CLIPPING == _COORDINATE_WISE:
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
        """y, z in the parameters' dtype."""
        _clipped_sstm_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                              level_ptr, alpha, y_weight, x_weight, stats, level, CLIPPING, LEVEL_PTR, X_DT, G_DT,
                              BLOCK, ALIGNED, X_DT)

    @triton.jit
    def _clipped_sstm_kernel_f32_state(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm,
                                       norms, level_ptr, alpha, y_weight, x_weight, stats, level,
                                       CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, X_DT: tl.constexpr,
                                       G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr):
        """y, z in float32 (bf16/fp16 parameters)."""
        _clipped_sstm_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                              level_ptr, alpha, y_weight, x_weight, stats, level, CLIPPING, LEVEL_PTR, X_DT, G_DT,
                              BLOCK, ALIGNED, tl.float32)

    @triton.jit
    def _clipped_sstm_program(addr, numels, block_tensor, block_start, n_tensors, applied, total_norm, norms,
                              level_ptr, alpha, y_weight, x_weight, stats, level,
                              CLIPPING: tl.constexpr, LEVEL_PTR: tl.constexpr, X_DT: tl.constexpr,
                              G_DT: tl.constexpr, BLOCK: tl.constexpr, ALIGNED: tl.constexpr, S_DT: tl.constexpr):
        t, start, n, ok, lam, factor = _prologue(block_tensor, block_start, numels, applied, total_norm, norms,
                                                 level_ptr, level, stats, CLIPPING, LEVEL_PTR, BLOCK)
        x_p = _operand(addr, 0, n_tensors, t, X_DT, ALIGNED)
        g_p = _operand(addr, 1, n_tensors, t, G_DT, ALIGNED)
        y_p = _operand(addr, 2, n_tensors, t, S_DT, ALIGNED)
        z_p = _operand(addr, 3, n_tensors, t, S_DT, ALIGNED)
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
        if CLIPPING == _COORDINATE_WISE:
            tl.store(stats + tl.program_id(0), sumsq)


# ------------------------------------------------------------------------ launch plans


# triton.jit chose when it defined the kernels above (TRITON_INTERPRET=1 then).
INTERPRETED = triton is not None and isinstance(_clipped_sgd_kernel, InterpretedFunction)


# ------------------------------------------------------------------------------ launch
def _tl(dtype: torch.dtype) -> Any:
    return {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}[dtype]


@torch.compiler.disable  # plan caching reads addresses: nothing for dynamo to trace
def _run(kernels: tuple, clipping: str, rows: list[list[Tensor]], accumulators: tuple[int, ...],
         norms: Sequence[Tensor], total_norm: Tensor, applied: Tensor, clip_threshold: float | Tensor,
         pointers: tuple, floats: tuple, flags: dict, config: FusedConfig) -> Tensor | None:  # fmt: skip
    """One launch per dtype group; returns ``‖clip(g)‖`` over ``rows[1]`` (None for ``norm``).

    ``kernels``: the variant with the accumulators in the parameters' dtype, and the one
    with float32 accumulators.
    """
    code = get_clipping(clipping).code
    # λ is a device tensor for clipped-SSTM (B/α_k) and a float for clipped-SGD; the unused
    # argument gets a placeholder that the kernel never reads.
    level_is_ptr = isinstance(clip_threshold, Tensor)
    level_ptr, level = (clip_threshold, 0.0) if level_is_ptr else (total_norm, float(clip_threshold))
    parts = []
    guard = torch.cuda.device(total_norm.device) if total_norm.is_cuda else contextlib.nullcontext()
    with guard:  # Triton launches on the current device
        for plan in fused_plans.plans(rows, config.block, accumulators):
            # layer_wise reads the per-tensor norms from one buffer: one small launch.
            layer_wise = code == ClipCode.LAYER_WISE
            group_norms = torch.stack([norms[i] for i in plan.index]) if layer_wise else total_norm
            if plan.blocks == 0:  # only empty tensors: nothing to update (and no empty grid)
                parts.append(plan.stats[:0].sum())
                continue
            kernel = kernels[plan.state_dtype not in (None, plan.x_dtype)]
            kernel[(plan.blocks,)](
                plan.addr, plan.numels, plan.block_tensor, plan.block_start, plan.n, applied, total_norm,
                group_norms, level_ptr, *pointers, plan.stats, level, *floats,
                CLIPPING=int(code), LEVEL_PTR=level_is_ptr, X_DT=_tl(plan.x_dtype), G_DT=_tl(plan.g_dtype),
                BLOCK=config.block, ALIGNED=plan.aligned, num_warps=config.num_warps, **flags,
            )  # fmt: skip
            if layer_wise:
                parts.append(torch.linalg.vector_norm(plan.stats[: plan.n]))
            elif code == ClipCode.COORDINATE_WISE:
                parts.append(plan.stats[: plan.blocks].sum().sqrt())
    if code == ClipCode.NORM:
        return None
    out = parts[0] if len(parts) == 1 else global_norm(parts)
    if code == ClipCode.LAYER_WISE and level_is_ptr:  # the foreach path's factors take λ's dtype (float64)
        out = out.to(torch.promote_types(out.dtype, clip_threshold.dtype))
    return out


def fused_clipped_sgd(
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
    norms: list[Tensor],
    total_norm: Tensor,
    applied: Tensor,
    average_weight: Tensor | None = None,
    config: FusedConfig | None = None,
    device_path: bool | None = None,
) -> Tensor | None:
    """:func:`optim.clipped_sgd.clipped_sgd` in one pass: same arguments, same result.

    Per coordinate: d = clip(g, λ) (0 when ``applied`` is False), x̄ ← lerp(x̄, x, 1/(k+1)),
    d += w·x, b ← μ·b + d, x ← x - γ·b (x - γ·d without momentum).

    Args:
        params, grads, momentum_buffers, averages: x, g, b, x̄; one device, dense, each
            operand laid out like its parameter (x̄ may be float32 under bf16/fp16 x).
        lr, clip_threshold, momentum, weight_decay, clipping: γ, λ, μ, w, the clipping kind.
        norms, total_norm, applied: per-tensor and global pre-clip norms and the
            finiteness mask (0-dim device tensors, as the optimizer computes them).
        average_weight: 1/(k+1) (0 on a skipped step), a 0-dim device tensor.
        config: what runs (default: :func:`selected_config`).
        device_path: accepted for the functional's signature; the fused path never reads
            a device value on the host.

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
    config = config or selected_config()
    if config.backend == "compile":
        return _compiled(sgd_update, config.compile_options)(
            params, grads, momentum_buffers, averages, lr=lr, clip_threshold=clip_threshold, momentum=momentum,
            weight_decay=weight_decay, clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
            average_weight=average_weight, device_path=True,
        )  # fmt: skip
    states = [list(s) for s in (momentum_buffers if momentum else None, averages) if s]
    rows = [list(params), list(grads), *states]
    flags = dict(MOMENTUM=bool(momentum), WEIGHT_DECAY=bool(weight_decay), AVERAGE=averages is not None)
    return _run((_clipped_sgd_kernel, _clipped_sgd_kernel_f32_average), clipping, rows,
                (len(rows) - 1,) if averages is not None else (), norms, total_norm, applied, clip_threshold,
                (total_norm if average_weight is None else average_weight,),
                (float(lr), float(momentum), float(weight_decay)), flags, config)  # fmt: skip


def fused_clipped_sstm(
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
    norms: list[Tensor],
    total_norm: Tensor,
    applied: Tensor,
    config: FusedConfig | None = None,
    device_path: bool | None = None,
) -> Tensor | None:
    """:func:`optim.clipped_sstm.clipped_sstm` in one pass: same arguments, same result.

    Per coordinate: z ← z - α·clip(g, λ), y ← lerp(y, z, y_weight), x ← lerp(y, z, x_weight).

    Args:
        params, grads, ys, zs: x, g, y, z; one device, dense, laid out like x (y and z may
            be float32 under bf16/fp16 x).
        alpha, clip_threshold, y_weight, x_weight: α_{k+1}, λ_{k+1} = B/α_{k+1} (device
            tensor or float), α_{k+1}/A_{k+1} (0 when skipped) and α_{k+2}/A_{k+2}: 0-dim
            tensors of any float dtype (the optimizer keeps its schedule in float64), read
            by the kernel.
        clipping, norms, total_norm, applied, config, device_path: as in
            :func:`fused_clipped_sgd`.

    Returns:
        ‖clip(g)‖ over these tensors for ``layer_wise``/``coordinate_wise``, else None.

    Raises:
        ValueError: an invalid clipping kind, or tensors the kernel cannot address.
    """
    config = config or selected_config()
    if config.backend == "compile":
        return _compiled(sstm_update, config.compile_options)(
            params, grads, ys, zs, alpha=alpha, clip_threshold=clip_threshold, y_weight=y_weight,
            x_weight=x_weight, clipping=clipping, norms=norms, total_norm=total_norm, applied=applied,
            device_path=True,
        )  # fmt: skip
    return _run((_clipped_sstm_kernel, _clipped_sstm_kernel_f32_state), clipping,
                [list(params), list(grads), list(ys), list(zs)], (2, 3), norms, total_norm, applied,
                clip_threshold, (alpha, y_weight, x_weight), (), {}, config)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _compiled(update: Callable[..., Tensor | None], options: tuple) -> Callable[..., Tensor | None]:
    """``torch.compile`` of the foreach kernels themselves, so the math stays written once."""

    def foreach_step(*args: Any, **kwargs: Any) -> Tensor | None:
        return update(*args, foreach=True, **kwargs)

    return torch.compile(foreach_step, dynamic=False, options=dict(options) or None)
