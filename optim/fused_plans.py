"""Launch plans of the fused kernels: device tables of operand addresses, cached by address.

Torch's ``_fused_adam`` / apex's ``multi_tensor_apply``, adapted to Triton's fixed argument
lists: one program per ``block`` elements of one tensor; an int64 device table holds each
operand's address per tensor, each tensor's size and each program's (tensor, offset). The
table is built once per set of addresses and cached (the caching allocator hands the
gradients the same addresses step after step), so a step is one launch per dtype with no
transfer. CUDA-graph capture works: a table built during capture is copied from a pinned
buffer set aside by an earlier step outside capture, and plans a graph uses are never
evicted.

The cache and the spare buffers are module state on purpose: they memoise device tables
for tensor addresses (what they hold never changes a result), like ``functools.lru_cache``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Plan", "plan_cache", "plans"]

_MAX_PLANS = 16


@dataclass
class Plan:
    """Device tables for the tensors of one dtype (see the module docstring)."""

    index: list[int]  # which tensors of the call
    x_dtype: torch.dtype  # of the parameters (and of the state kept in their dtype)
    g_dtype: torch.dtype  # of the gradients
    addr: Tensor  # int64 [rows, n]: operand addresses
    numels: Tensor  # int64 [n]
    block_tensor: Tensor  # int64 [blocks]
    block_start: Tensor  # int64 [blocks]
    stats: Tensor  # float32 [max(blocks, n)]: per-block ‖clip(g)‖² or per-tensor ‖clip(g_t)‖
    n: int
    blocks: int
    aligned: bool
    host: Tensor | None  # the pinned source of the tables: a graph's memcpy node reads it
    state_dtype: torch.dtype | None = None  # of the accumulators (x̄, y, z), when there are any
    captured: bool = False  # used in a CUDA graph: its tables must outlive the cache


plan_cache: OrderedDict[tuple, list[Plan]] = OrderedDict()
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


def plans(rows: Sequence[Sequence[Tensor]], block: int, accumulators: Sequence[int] = ()) -> list[Plan]:
    """The cached plans for ``rows`` (operand lists: the parameters, the gradients, the
    state), one per (parameter, gradient, accumulator dtype), built when the addresses are new.

    The key is every operand's address: a step costs one lookup (a few µs per tensor).

    Args:
        rows: the operands, one list per row, each laid out like the parameters.
        block: elements per program.
        accumulators: the rows (x̄, y, z) that may be float32 under lower-precision
            parameters; every other state row has the parameter's dtype.

    Raises:
        ValueError: a tensor is not dense, or an operand's size, strides, dtype or device
            differ from its parameter's.
    """
    key = (block, *accumulators, *map(len, rows), *map(Tensor.data_ptr, chain.from_iterable(rows)))
    capturing = rows[0][0].is_cuda and torch.cuda.is_current_stream_capturing()
    cached = plan_cache.get(key)
    if cached is not None:
        plan_cache.move_to_end(key)
        for plan in cached if capturing else ():
            plan.captured = True
        return cached
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
            allowed = (x.dtype, torch.float32) if r in accumulators else (x.dtype,)
            if r > 1 and t.dtype not in allowed:
                raise ValueError(f"fused: state {r} of parameter {i} is {t.dtype}, the parameter {x.dtype}")
        state = {rows[r][i].dtype for r in accumulators}
        if len(state) > 1:
            raise ValueError(f"fused: the accumulators of parameter {i} differ in dtype: {sorted(map(str, state))}")
        groups.setdefault((x.dtype, rows[1][i].dtype, *state), []).append(i)
    built = [_build([[row[i] for i in index] for row in rows], index, block, capturing, accumulators)
             for index in groups.values()]  # fmt: skip
    plan_cache[key] = built
    # Evict the oldest plan no graph uses (a replay would read freed tables).
    old = next((k for k, v in plan_cache.items() if not any(p.captured for p in v)), None)
    if len(plan_cache) > _MAX_PLANS and old is not None:
        del plan_cache[old]
    return built


def _build(rows: list[list[Tensor]], index: list[int], block: int, capturing: bool,
           accumulators: Sequence[int]) -> Plan:  # fmt: skip
    numels = [x.numel() for x in rows[0]]
    starts = [(i, s) for i, m in enumerate(numels) for s in range(0, m, block)]
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
    return Plan(
        index=index,
        x_dtype=rows[0][0].dtype,
        g_dtype=rows[1][0].dtype,
        state_dtype=rows[accumulators[0]][0].dtype if accumulators else None,
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

