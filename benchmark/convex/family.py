"""The heavy-tail family in the convex suite: NSGD-M, clipped Adam, SGD with AutoClip/ZClip.

The same vectorisation as :mod:`benchmark.convex.per_run` (one run per row of a
``(runs, n)`` parameter), through the real classes of :mod:`optim`: the per-run mixin
replaces how norms are measured and the shape of the optimizer-level state, and the two
hooks of the family (NSGD-M's norm of m, clipped Adam's step count t) are taken per run
the same way. The clipping policies are elementwise in the norm, so a ``(runs, 1)`` norm
gives every run its own history (AutoClip) or EMA (ZClip).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import Tensor

from optim import ClipPolicy, ClipPolicyOptimizer, ClippedAdam, NSGDM

from .per_run import PerRun, PerRunClippedSGD

__all__ = ["PerRunClippedAdam", "PerRunNSGDM", "PerRunPolicySGD"]


def _row_norms(tensors: list[Tensor]) -> tuple[list[Tensor], Tensor]:
    norms = [torch.linalg.vector_norm(t, dim=1, keepdim=True) for t in tensors]
    total = norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.cat(norms, dim=1), dim=1, keepdim=True)
    return norms, total


class PerRunNSGDM(PerRun, NSGDM):
    """:class:`~optim.NSGDM` over ``(runs, n)`` parameters: m is normalized per run."""

    def _momentum_norms(self, buffers: list[Tensor], foreach: bool) -> tuple[list[Tensor], Tensor]:
        return _row_norms(buffers)


class PerRunClippedAdam(PerRun, ClippedAdam):
    """:class:`~optim.ClippedAdam` over ``(runs, n)`` parameters: t per run (skips differ)."""

    def _new_step_count(self, param: Tensor) -> Tensor:
        return torch.zeros((self.runs, 1), dtype=torch.float32, device=param.device)


class PerRunPolicySGD(PerRun, ClipPolicyOptimizer):
    """SGD (averaged, as the suite's SGD) behind a clipping policy, one run per row.

    Args:
        params: ``(runs, n)`` parameters.
        lr: the SGD stepsize.
        policy: a fresh :class:`~optim.policies.ClipPolicy` (AutoClip or ZClip).
        average: keep x̄ (the SGD theorem's output) as the evaluation point.
    """

    def __init__(self, params: Iterable[Any], *, lr: float, policy: ClipPolicy, average: bool = True) -> None:
        base = PerRunClippedSGD(params, lr=lr, clip_level=math.inf, average=average)
        ClipPolicyOptimizer.__init__(self, base, policy)
        self.runs = base.runs
        self.foreach = False  # per-run factors are (runs, 1) tensors
