"""Hyperparameters and mini-batch sizes from the convex theorems, with stated constants.

The paper (Gorbunov, Danilova & Gasnikov 2020) gives the parameter choices of the two convex theorems up
to constants. This module fixes the constants, in one place, and says why:

clipped-SGD (Theorem for Algorithm 2; output x̄ᴺ):
    γ = 1 / (80 L ln(4N/β))                       (as stated, no free constant)
    λ = c_λ · L · R₀, c_λ = 2                     (‖∇f(x)‖ ≤ L‖x − x*‖ ≤ 2LR₀ on the ball
                                                   of radius 2R₀ where the proof keeps the
                                                   iterates: the true gradient is never cut)
    m = max{1, ⌈c_m σ² N / (R₀² L² ln(4N/β))⌉}, c_m = 1

clipped-SSTM (Theorem for Algorithm 1, ν = 1; output yᴺ):
    a = c_a · ln²(4N/β), c_a = 1                  (lr = 1/a)
    B = c_B · R₀ / ln(4N/β), c_B = 1
    m_k = max{1, ⌈c_m σ² α²_{k+1} N ln(4N/β) / R₀²⌉}, c_m = 1, α_{k+1} from the
          optimizer's own schedule (:func:`optim.sstm_schedule`)

ln(4N/β) is used wherever the theorems write ln(N/β) or ln(4N/β): the two differ by a
bounded factor, which Θ(·) absorbs. β = 0.01, so "with probability ≥ 1 − β" is a
statement about the 99% quantile that the reports show. The unclipped SGD and SSTM get
the same formulas with λ = B = ∞.

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020 (arXiv:2005.10785), Theorems for
    clipped-SSTM and clipped-SGD in the convex case.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from optim import sstm_schedule

from .problem import ConvexProblem

__all__ = ["TheoryConstants"]


@dataclass(frozen=True)
class TheoryConstants:
    """The constants hidden in the theorems' Θ(·), and the confidence level β.

    Attributes:
        beta: β in (0, 1): the guarantees hold with probability ≥ 1 − β.
        c_lambda: λ = c_λ L R₀ (clipped-SGD).
        c_a: a = c_a ln²(4N/β) (clipped-SSTM).
        c_B: B = c_B R₀ / ln(4N/β) (clipped-SSTM).
        c_m: the factor in both mini-batch formulas.

    Raises:
        ValueError: β outside (0, 1) or a constant that is not positive.
    """

    beta: float = 0.01
    c_lambda: float = 2.0
    c_a: float = 1.0
    c_B: float = 1.0
    c_m: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.beta < 1.0:
            raise ValueError(f"Invalid beta: {self.beta!r} (must be in (0, 1))")
        for name in ("c_lambda", "c_a", "c_B", "c_m"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"Invalid {name}: {value!r} (must be > 0 and finite)")

    def log_term(self, iters: int) -> float:
        """ln(4N/β)."""
        return math.log(4.0 * iters / self.beta)

    # -- clipped-SGD -------------------------------------------------------------------

    def sgd(self, problem: ConvexProblem, iters: int, *, clipped: bool = True) -> dict[str, float]:
        """``{"lr": γ, "clip_level": λ}`` (λ = ∞ when not clipped)."""
        gamma = 1.0 / (80.0 * problem.L * self.log_term(iters))
        clip = self.c_lambda * problem.L * problem.R0 if clipped else math.inf
        return {"lr": gamma, "clip_level": clip}

    def sgd_batches(self, problem: ConvexProblem, iters: int) -> np.ndarray:
        """The constant mini-batch size m of the clipped-SGD theorem, for every step."""
        m = self.c_m * problem.sigma2 * iters / (problem.R0**2 * problem.L**2 * self.log_term(iters))
        return np.full(iters, max(1, math.ceil(m)), dtype=np.int64)

    # -- clipped-SSTM ------------------------------------------------------------------

    def sstm(self, problem: ConvexProblem, iters: int, *, clipped: bool = True) -> dict[str, float]:
        """``{"a": a, "B": B}`` (B = ∞ when not clipped)."""
        ln = self.log_term(iters)
        return {"a": self.c_a * ln**2, "B": self.c_B * problem.R0 / ln if clipped else math.inf}

    def sstm_batches(self, problem: ConvexProblem, iters: int, a: float) -> np.ndarray:
        """m_k for k = 0 … N−1, with α_{k+1} from the optimizer's schedule for this a."""
        steps = torch.arange(iters, dtype=torch.float64)
        alpha = sstm_schedule(steps, torch.zeros_like(steps), lr=1.0 / a, L=problem.L, nu=1.0, max_ratio=1.0)[0]
        m = self.c_m * problem.sigma2 * alpha.numpy() ** 2 * iters * self.log_term(iters) / problem.R0**2
        return np.maximum(1, np.ceil(m)).astype(np.int64)

    # -- reports -----------------------------------------------------------------------

    def formulas(self) -> list[str]:
        """The formulas with their constants, one line each (for reports)."""
        return [
            f"beta = {self.beta:g}; ln = ln(4N/beta)",
            "clipped-SGD: lr = gamma = 1/(80 L ln); "
            f"clip_level = lambda = {self.c_lambda:g} L R0; "
            f"m = max(1, ceil({self.c_m:g} sigma^2 N / (R0^2 L^2 ln)))",
            f"clipped-SSTM: a = {self.c_a:g} ln^2 (lr = 1/a); B = {self.c_B:g} R0 / ln; "
            f"m_k = max(1, ceil({self.c_m:g} sigma^2 alpha_(k+1)^2 N ln / R0^2))",
            "SGD, SSTM: the same with lambda = B = inf; Adam: no theorem, torch's default lr = 1e-3",
        ]

    def as_dict(self) -> dict[str, float]:
        """The constants, for results.json."""
        return asdict(self)
