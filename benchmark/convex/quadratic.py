"""A convex quadratic with additive gradient noise: the paper's motivational example, generalised."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .noise import NoiseModel
from .problem import ConvexProblem

__all__ = ["QuadraticProblem"]


class QuadraticProblem(ConvexProblem):
    """f(x) = ½ (x − x*)ᵀ H (x − x*), stochastic gradient H(x − x*) + ξ/√m.

    The paper's motivational example is f(x, ξ) = ‖x‖²/2 + ⟨ξ, x⟩, i.e. H = I and
    additive noise ξ. Here H has eigenvalues log-spaced in [L/κ, L] (κ = 10⁶ by
    default): with a spread spectrum, gradient descent shows its worst-case O(1/N) and
    accelerated methods their O(1/N²) over N ≤ √κ iterations, which is the smooth
    convex (not strongly convex) regime the theorems are about. x⁰ − x* has the same
    energy R₀²/d along every eigenvector, so every part of the spectrum matters.

    H is diagonal unless ``rotate=True``. SGD, clipped-SGD, SSTM and clipped-SSTM (with
    norm clipping) commute with orthogonal changes of variables, and the noise is
    rotation invariant, so for them a diagonal H is *exactly* equivalent to any
    H = Q diag(h) Qᵀ. Adam is coordinate-wise and does profit from an axis-aligned H;
    ``rotate=True`` (one dense d×d product per step, about 2× the cost at d = 100)
    takes that advantage away.

    Mini-batches: the oracle returns ∇f(x) + ξ/√m with ξ one draw of the noise law, so a
    batch of m has variance σ²/m, the only property of a mini-batch the theorems use.
    For Gaussian noise this *is* the law of a mean of m draws; for heavy-tailed noise it
    keeps the tail of a single draw, where a true mean of m draws would be lighter
    (central limit theorem): a harder instance of the same assumptions, at the cost of
    one draw instead of m.

    Args:
        dim: d.
        noise: the law of ξ (E‖ξ‖² = σ² per oracle call).
        L: the largest eigenvalue of H.
        condition: κ = L/μ of the spectrum (μ the smallest eigenvalue).
        R0: ‖x⁰ − x*‖.
        rotate: use a random orthogonal eigenbasis instead of the coordinate axes.
        seed: for x*, the signs of x⁰ − x* and the rotation.
        dtype, device: of the iterates.

    Raises:
        ValueError: dim < 1, or L, condition, R0 not positive (condition ≥ 1).

    References:
        Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
        accelerated gradient clipping. NeurIPS 2020, Section 2 (motivational example).
        Nesterov. Lectures on Convex Optimization, 2018, Section 2.1 (worst-case
        quadratics for first-order methods).
    """

    def __init__(
        self,
        dim: int,
        noise: NoiseModel,
        *,
        L: float = 1.0,
        condition: float = 1e6,
        R0: float = 1.0,
        rotate: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Invalid dim: {dim!r} (must be an integer >= 1)")
        for name, value, low in (("L", L, 0.0), ("R0", R0, 0.0)):
            if not (math.isfinite(value) and value > low):
                raise ValueError(f"Invalid {name}: {value!r} (must be > 0 and finite)")
        if not (math.isfinite(condition) and condition >= 1.0):
            raise ValueError(f"Invalid condition: {condition!r} (must be >= 1)")
        self.name = "quadratic"
        self.dim = dim
        self.noise = noise
        self.noise_name = noise.name
        self.L = float(L)
        self.condition = float(condition)
        self.rotate = rotate
        self.dtype = dtype
        self.device = torch.device(device)
        self.sigma2 = noise.sigma**2
        gen = torch.Generator().manual_seed(seed)
        # d = 1: the single eigenvalue is L (logspace would put it at L/κ).
        eig = L * torch.logspace(-math.log10(condition) if dim > 1 else 0.0, 0.0, dim, dtype=torch.float64)
        self.eigenvalues = eig
        self.x_star = torch.randn(dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
        signs = torch.randint(0, 2, (dim,), generator=gen).to(torch.float64) * 2 - 1
        self.basis = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0] if rotate else None
        offset = signs * (R0 / math.sqrt(dim))
        self.x0 = self.x_star + (offset if self.basis is None else self.basis @ offset)
        self.f_star = 0.0
        self._h = eig.to(self.device, dtype)
        self._xs = self.x_star.to(self.device, dtype)
        self._Q = None if self.basis is None else self.basis.to(self.device, dtype)

    @property
    def heavy_tailed(self) -> bool:
        """Whether the additive noise has a polynomial tail."""
        return self.noise.heavy_tailed

    def hessian_times(self, v: Tensor) -> Tensor:
        """H v for each row of ``v`` (H = Q diag(h) Qᵀ, or diag(h))."""
        if self._Q is None:
            return v * self._h
        return ((v @ self._Q) * self._h) @ self._Q.T

    def gap(self, x: Tensor) -> Tensor:
        # ½ eᵀHe computed directly (no f(x) - f* subtraction, so no cancellation).
        e = (x.to(self.device, self.dtype) - self._xs).to(torch.float64)
        h = self._h.to(torch.float64)
        if self._Q is not None:
            e = e @ self._Q.to(torch.float64)
        return self._finite_or_inf(0.5 * (e.square() * h).sum(dim=1))

    def draw(self, runs: int, batch: int, generator: torch.Generator, rng: np.random.Generator) -> Tensor:
        """ξ/√m for every run: ``(runs, dim)``."""
        return self.noise.sample(
            runs, self.dim, generator, rng, scale=1.0 / math.sqrt(batch), dtype=self.dtype, device=self.device
        )

    def gradient_at(self, x: Tensor, draw: Tensor) -> Tensor:
        return self.hessian_times(x - self._xs).add_(draw)

    def describe(self) -> dict:
        out = super().describe()
        out.update(
            {
                "spectrum": f"log-spaced in [{self.L / self.condition:.3g}, {self.L:.3g}] "
                f"(kappa = {self.condition:.3g})",
                "rotated": self.rotate,
                "noise_law": self.noise.describe(),
                "oracle": "grad f(x) + xi/sqrt(m): the variance of a size-m mini-batch, the tail of one draw",
            }
        )
        return out
