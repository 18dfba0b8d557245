"""What the fused path runs: the backend, the Triton launch parameters, and where it can run.

Configuration is explicit: a :class:`FusedConfig` passed as ``config=`` to the fused
functionals; without one, the selection of :func:`set_backend`, kept in a context variable
(scoped to the thread or task that set it; the default is Triton with the block and warps
below). Nothing is read from the environment.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["BACKENDS", "BLOCK", "NUM_WARPS", "SUPPORTED_DTYPES", "FusedConfig", "selected_config", "set_backend",
           "support_reason"]  # fmt: skip

BACKENDS = ("triton", "compile")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# 8 elements (two 128-bit accesses per operand) per thread: ptxas (sm_90) gives these
# kernels 40-48 registers, against ~150 at 16 per thread (one block per SM).
BLOCK = 2048
NUM_WARPS = 8


@dataclass(frozen=True)
class FusedConfig:
    """What the fused path runs.

    Args:
        backend: ``"triton"`` (the kernels of :mod:`optim.fused`) or ``"compile"`` (``torch.compile`` of the
            foreach kernels of :mod:`optim.kernels`).
        block: elements per Triton program (a power of two).
        num_warps: warps per Triton program.
        compile_options: inductor options for ``"compile"`` as ``(name, value)`` pairs (e.g.
            ``(("combo_kernels", True),)``, which fuses the per-tensor kernels horizontally).

    Raises:
        ValueError: an unknown backend, or a block that is not a power of two.
    """

    backend: str = "triton"
    block: int = BLOCK
    num_warps: int = NUM_WARPS
    compile_options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"Invalid fused backend: {self.backend!r} (must be one of {', '.join(BACKENDS)})")
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"Invalid block: {self.block!r} (must be a power of two >= 16)")
        if self.num_warps < 1:
            raise ValueError(f"Invalid num_warps: {self.num_warps!r} (must be >= 1)")


_SELECTED: contextvars.ContextVar[FusedConfig] = contextvars.ContextVar("clipbench_fused", default=FusedConfig())


def set_backend(name: str, **compile_options: Any) -> None:
    """Select what the fused path runs when no ``config`` is passed: ``"triton"`` or ``"compile"``.

    Args:
        name: one of :data:`BACKENDS`.
        **compile_options: inductor options for ``"compile"``.

    Raises:
        ValueError: unknown name.
    """
    _SELECTED.set(FusedConfig(backend=name, compile_options=tuple(sorted(compile_options.items()))))


def selected_config() -> FusedConfig:
    """The configuration :func:`set_backend` selected (the default one if it was not called)."""
    return _SELECTED.get()


def support_reason(tensors: Sequence[Tensor], config: FusedConfig | None, *, triton_installed: bool,
                   interpreted: bool) -> str | None:  # fmt: skip
    """Why the fused path cannot run on ``tensors``, or None (see :func:`optim.fused.fused_support`)."""
    if (config or selected_config()).backend == "compile":
        return None
    if not triton_installed:
        return "triton is not installed"
    for t in tensors:  # once per step: attribute reads only
        if t.dtype not in SUPPORTED_DTYPES:
            return f"dtype {t.dtype} is not supported (float32, bfloat16, float16)"
        if not (t.is_cpu if interpreted else t.is_cuda):
            where = "on CPU (TRITON_INTERPRET=1)" if interpreted else "on CUDA (on CPU only with TRITON_INTERPRET=1)"
            return f"tensors must all be {where}; found one on {t.device}"
    return None
