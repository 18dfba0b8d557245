"""The interface of a convex test problem with a known optimum, run as many runs at once."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["ConvexProblem"]


class ConvexProblem(ABC):
    """A convex L-smooth f with known minimiser, and a stochastic gradient oracle.

    Iterates are ``(runs, dim)`` tensors: row r is run r. Everything a theorem needs is
    an attribute, so hyperparameter formulas read it from here.

    Attributes:
        name: short identifier used in file names and tables.
        dim: d, the number of variables.
        L: the Lipschitz constant of ∇f (exact, not an estimate).
        x0: the common starting point, shape ``(dim,)``, float64.
        x_star: a minimiser x*, shape ``(dim,)``, float64.
        f_star: f(x*).
        sigma2: σ², a uniform bound on E‖∇f(x, ξ) − ∇f(x)‖² for a batch of one.
        noise_name: what the noise is, for tables (``gaussian``, ``student_t:2.5``, ``data``).
        dtype, device: of the iterates.
    """

    name: str
    dim: int
    L: float
    x0: Tensor
    x_star: Tensor
    f_star: float
    sigma2: float
    noise_name: str
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    @property
    def R0(self) -> float:
        """R₀ = ‖x⁰ − x*‖₂."""
        return float(torch.linalg.vector_norm(self.x0 - self.x_star))

    @property
    def sigma(self) -> float:
        """σ = √σ²."""
        return math.sqrt(self.sigma2)

    @property
    def heavy_tailed(self) -> bool:
        """Whether the noise of one oracle call has a polynomial tail."""
        return False

    @property
    def max_batch(self) -> int | None:
        """The largest mini-batch the oracle simulates (None: any size, at no extra cost)."""
        return None

    def start(self, runs: int) -> Tensor:
        """``runs`` copies of x⁰ as a ``(runs, dim)`` tensor."""
        return self.x0.to(self.device, self.dtype).expand(runs, self.dim).clone()

    @abstractmethod
    def gap(self, x: Tensor) -> Tensor:
        """f(x) − f* per row, float64, ``+inf`` where x is not finite.

        Args:
            x: ``(runs, dim)`` points.

        Returns:
            ``(runs,)`` float64 tensor on the CPU.
        """

    def gradient(
        self, x: Tensor, batch: int, generator: torch.Generator, rng: np.random.Generator
    ) -> Tensor:
        """One stochastic gradient per row: the mean of ``batch`` oracle calls at x.

        Args:
            x: ``(runs, dim)`` points.
            batch: the mini-batch size m ≥ 1.
            generator, rng: the random streams (torch for vectors, NumPy for scalars).

        Returns:
            ``(runs, dim)`` tensor, unbiased for ∇f(x), variance ≤ σ²/m per row.
        """
        return self.gradient_at(x, self.draw(x.shape[0], batch, generator, rng))

    @abstractmethod
    def draw(self, runs: int, batch: int, generator: torch.Generator, rng: np.random.Generator) -> Any:
        """The randomness of one step of ``runs`` runs (noise vectors, sampled indices, ...).

        Split from :meth:`gradient_at` so that several hyperparameter settings can share
        one draw (common random numbers, and one sampling cost instead of several).
        """

    @abstractmethod
    def gradient_at(self, x: Tensor, draw: Any) -> Tensor:
        """The stochastic gradient at x for a :meth:`draw` (which it must not modify)."""

    def describe(self) -> dict[str, Any]:
        """The problem's constants, for reports."""
        return {
            "problem": self.name,
            "noise": self.noise_name,
            "dim": self.dim,
            "L": self.L,
            "R0": self.R0,
            "sigma2": self.sigma2,
            "f_star": self.f_star,
            "f0_minus_f_star": float(self.gap(self.start(1))[0]),
        }

    @staticmethod
    def _finite_or_inf(values: Tensor) -> Tensor:
        """NaN → +inf: a diverged run is a failed run, never a missing one."""
        values = values.detach().to("cpu", torch.float64)
        return torch.where(torch.isnan(values), torch.full_like(values, math.inf), values)
