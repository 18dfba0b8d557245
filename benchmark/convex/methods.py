"""The methods of the convex suite, as data: how to build each, its theory, its grid.

The thesis' five (SGD, clipped-SGD, SSTM, clipped-SSTM, Adam) and the heavy-tail family
(NSGD-M, clipped Adam, SGD behind AutoClip and ZClip: :mod:`benchmark.convex.family`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from optim import AutoClip, ZClip

from .family import PerRunClippedAdam, PerRunNSGDM, PerRunPolicySGD
from .per_run import PerRunClippedSGD, PerRunClippedSSTM
from .problem import ConvexProblem
from .theory import TheoryConstants

__all__ = ["BOUNDS", "METHODS", "Method", "check_methods"]

# Tuning grids, in units of the problem's own scales (1/L, R₀, a gradient-norm scale),
# wide enough that the chosen point is normally inside (the report flags a choice on an
# edge of the grid that is not a bound of the method itself).
_LR_GRID = (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)  # × 1/L (SGD)
_LR_GRID_CLIPPED = (1e-2, 3e-2, 0.1, 0.3, 1.0)  # × 1/L: clipping bounds every step
_CLIP_GRID = (0.03, 0.3, 3.0)  # × sqrt(σ²/m + (L R₀)²), the norm of a stochastic gradient at x⁰
_A_GRID = (1.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7)  # a = 1/lr of SSTM
_A_GRID_CLIPPED = (1.0, 1e3, 1e6)
_B_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)  # × R₀
_ADAM_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)  # × R₀/√d: Adam moves every coordinate by ≈ lr
_NSGDM_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # × R₀: NSGD-M moves by exactly lr per step
_POLICIES = {"autoclip": AutoClip, "zclip": ZClip}  # the paper's defaults (p = 10; W = 25, z_t = 2.5)

#: admissible limits of a hyperparameter: a grid point there is not an "edge". SSTM needs
#: a ≥ 1: α²_{k+1}L ≤ A_{k+1} (the similar-triangles step) fails for large k when a < 1.
BOUNDS = {"a": (1.0, None)}


@dataclass(frozen=True)
class Method:
    """One method of the suite.

    Attributes:
        name: ``sgd``, ``clipped_sgd``, ``sstm``, ``clipped_sstm``, ``adam``, ``nsgdm``,
            ``clipped_adam``, ``sgd_autoclip`` or ``sgd_zclip``.
        label: for tables and plots.
        family: ``sgd``, ``sstm``, ``adam``, ``nsgdm`` or ``autoclip``/``zclip`` (SGD behind
            that policy): which theorem, batch schedule and grid apply (the family's
            methods take the SGD theorem's mini-batches).
        clipped: whether clipping is on (off = the same class with λ or B = ∞).
        theory_slope: the exponent of N in the theorem's bound in the smooth convex
            regime (−1 for SGD-type, up to its log factor; −2 for SSTM-type); None for Adam.
        output: the point the theory evaluates.
        counterpart: the unclipped method of a clipped one (for the comparisons).
    """

    name: str
    label: str
    family: str
    clipped: bool
    theory_slope: float | None
    output: str
    counterpart: str | None = None

    def build(self, param: Tensor, hparams: dict[str, float], problem: ConvexProblem) -> Optimizer:
        """The optimizer over ``param`` (a ``(runs, dim)`` leaf tensor), one run per row.

        SGD and clipped-SGD are :class:`~optim.ClippedSGD` with ``average=True`` (the
        theory's output x̄ᴺ is the evaluation point); SGD has λ = ∞, which makes the
        clip factor exactly 1. SSTM and clipped-SSTM are :class:`~optim.ClippedSSTM`
        (lr = 1/a, B = ∞ for SSTM). Adam is ``torch.optim.Adam``: coordinate-wise, so one
        ``(runs, dim)`` tensor is ``runs`` independent runs.

        Raises:
            ValueError: a missing or invalid hyperparameter (the optimizer's own message).
        """
        if self.family == "sgd":
            clip = hparams["clip_level"] if self.clipped else math.inf
            return PerRunClippedSGD([param], lr=hparams["lr"], clip_level=clip, average=True)
        if self.family == "sstm":
            clip = hparams["B"] if self.clipped else math.inf
            return PerRunClippedSSTM([param], lr=1.0 / hparams["a"], L=problem.L, clip_level=clip)
        if self.family == "nsgdm":
            return PerRunNSGDM([param], lr=hparams["lr"], momentum=0.9)
        if self.family in _POLICIES:
            return PerRunPolicySGD([param], lr=hparams["lr"], policy=_POLICIES[self.family]())
        if self.clipped:  # clipped Adam: AdamW's update without weight decay = Adam's
            return PerRunClippedAdam([param], lr=hparams["lr"], clip_level=hparams["clip_level"], weight_decay=0.0)
        return torch.optim.Adam([param], lr=hparams["lr"])

    def theory_hparams(self, problem: ConvexProblem, iters: int, constants: TheoryConstants) -> dict[str, float]:
        """The theorem's choice for horizon N = ``iters``.

        Without a theorem in this suite: Adam takes torch's default lr (clipped Adam with
        clipped-SGD's λ), NSGD-M lr = R₀/√N (N steps of length lr cover at most R₀√N), SGD
        behind a policy the unclipped SGD theorem's lr.
        """
        if self.family == "sgd":
            return constants.sgd(problem, iters, clipped=self.clipped)
        if self.family == "sstm":
            return constants.sstm(problem, iters, clipped=self.clipped)
        if self.family == "nsgdm":
            return {"lr": problem.R0 / math.sqrt(iters)}
        if self.family in _POLICIES:
            return {"lr": constants.sgd(problem, iters, clipped=False)["lr"]}
        if self.clipped:
            return {"lr": 1e-3, "clip_level": constants.sgd(problem, iters, clipped=True)["clip_level"]}
        return {"lr": 1e-3}

    def grid(self, problem: ConvexProblem, batch: float) -> list[dict[str, float]]:
        """The tuning grid (``batch``: the typical mini-batch size, for the clip scale)."""
        if self.family == "sgd":
            if not self.clipped:
                return [{"lr": v / problem.L, "clip_level": math.inf} for v in _LR_GRID]
            scale = math.sqrt(problem.sigma2 / batch + (problem.L * problem.R0) ** 2)
            return [{"lr": v / problem.L, "clip_level": c * scale} for v, c in product(_LR_GRID_CLIPPED, _CLIP_GRID)]
        if self.family == "sstm":
            if not self.clipped:
                return [{"a": a, "B": math.inf} for a in _A_GRID]
            return [{"a": a, "B": b * problem.R0} for a, b in product(_A_GRID_CLIPPED, _B_GRID)]
        if self.family == "nsgdm":
            return [{"lr": v * problem.R0} for v in _NSGDM_GRID]
        if self.family in _POLICIES:  # the policy bounds every step, as clipping does
            return [{"lr": v / problem.L} for v in _LR_GRID_CLIPPED]
        scale = problem.R0 / math.sqrt(problem.dim)
        if self.clipped:
            clip = math.sqrt(problem.sigma2 / batch + (problem.L * problem.R0) ** 2)
            return [{"lr": v * scale, "clip_level": c * clip} for v, c in product(_ADAM_GRID, _CLIP_GRID)]
        return [{"lr": v * scale} for v in _ADAM_GRID]

    def describe_hparams(self, hparams: dict[str, Any]) -> str:
        """``lr=0.01, clip_level=1.2`` (only the keys that matter for this method)."""
        keys = {"sgd": ("lr", "clip_level"), "sstm": ("a", "B"), "adam": ("lr", "clip_level")}.get(self.family, ("lr",))
        if not self.clipped:
            keys = keys[:1]
        return ", ".join(f"{k}={hparams[k]:.3g}" for k in keys)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sgd", "SGD", "sgd", False, -1.0, "x̄ᴺ (running average)"),
        Method("clipped_sgd", "clipped-SGD", "sgd", True, -1.0, "x̄ᴺ (running average)", "sgd"),
        Method("sstm", "SSTM", "sstm", False, -2.0, "yᴺ"),
        Method("clipped_sstm", "clipped-SSTM", "sstm", True, -2.0, "yᴺ", "sstm"),
        Method("adam", "Adam", "adam", False, None, "xᴺ (last iterate)"),
        Method("nsgdm", "NSGD-M", "nsgdm", False, None, "xᴺ (last iterate)"),
        Method("clipped_adam", "clipped-Adam", "adam", True, None, "xᴺ (last iterate)", "adam"),
        Method("sgd_autoclip", "SGD+AutoClip", "autoclip", True, None, "x̄ᴺ (running average)", "sgd"),
        Method("sgd_zclip", "SGD+ZClip", "zclip", True, None, "x̄ᴺ (running average)", "sgd"),
    )
}


def check_methods(methods: list[str]) -> None:
    """Raise ValueError naming any method that is not in :data:`METHODS`."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; available: {', '.join(METHODS)}")
