"""Logistic regression on real, fat-tailed data that ships with matplotlib."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .problem import ConvexProblem

__all__ = ["LogisticProblem"]

#: predictors (monthly log-returns) and target (sign of the S&P 500's monthly log-return)
FEATURES = ("IBM", "AAPL", "MSFT", "XRX", "ADBE")
TARGET = "^GSPC"


def load_stock_returns(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Monthly log-returns of five stocks and whether the S&P 500 went up that month.

    ``Stocks.csv`` (Yahoo Finance closes, 1990-2022) is in matplotlib's sample data. The
    391 dates where all six series are present give 390 monthly returns. Features are
    standardised (mean 0, variance 1), which keeps their fat tails (excess kurtosis up to
    6); an intercept column of ones is appended.

    Args:
        path: the CSV file (default: matplotlib's copy).

    Returns:
        ``(A, y)``: A of shape (390, 6), float64; y in {0, 1}, float64.

    Raises:
        FileNotFoundError: matplotlib's sample data is not installed and no path given.
    """
    if path is None:
        from matplotlib import cbook

        path = cbook.get_sample_data("Stocks.csv", asfileobj=False)
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and not row[0].startswith("#")]
    header, body = rows[0], rows[1:]
    columns = [header.index(name) for name in (*FEATURES, TARGET)]
    dated = sorted((row[0], [float(row[j]) for j in columns]) for row in body if all(row[j] for j in columns))
    prices = np.array([values for _, values in dated], dtype=np.float64)
    returns = np.diff(np.log(prices), axis=0)
    features = returns[:, : len(FEATURES)]
    features = (features - features.mean(axis=0)) / features.std(axis=0)
    A = np.hstack([features, np.ones((len(features), 1))])
    y = (returns[:, -1] > 0).astype(np.float64)
    return A, y


class LogisticProblem(ConvexProblem):
    """f(x) = (1/n) Σᵢ log(1 + exp(aᵢᵀx)) − yᵢ aᵢᵀx + (μ/2)‖x‖², mini-batches from the data.

    The stochastic gradient is the mean over m samples drawn uniformly with replacement
    (i.i.d. oracle calls, as the theorems assume). Constants, all exact:

    - L = λ_max(AᵀA)/(4n) + μ (the logistic loss has curvature ≤ 1/4);
    - σ² = (1/n) Σᵢ ‖aᵢ‖²: since |s(aᵢᵀx) − yᵢ| ≤ 1, E‖∇fᵢ(x) − ∇f(x)‖² ≤ E‖∇fᵢ(x)‖²
      ≤ (1/n) Σᵢ ‖aᵢ‖² at every x, a uniform bound as the theorems need;
    - x*, f* by Newton's method in float64 to ‖∇f(x*)‖ ≤ 1e-13.

    The data are not separable (about 82% training accuracy), so x* exists with μ = 0,
    the default. The noise is bounded (finite data) but fat: per-sample gradient norms at
    x* have a max/median ratio of about 17. x⁰ = 0.

    Args:
        mu: ℓ2 weight μ ≥ 0.
        data: ``(A, y)`` to use instead of :func:`load_stock_returns`.
        max_batch: the largest mini-batch drawn per step (the cost is runs·m·d per step);
            larger requests are capped and reported as such.
        dtype, device: of the iterates.

    Raises:
        ValueError: μ < 0, or Newton's method does not converge (separable data and μ = 0).

    References:
        Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
        accelerated gradient clipping. NeurIPS 2020 (logistic regression experiments).
    """

    def __init__(
        self,
        *,
        mu: float = 0.0,
        data: tuple[np.ndarray, np.ndarray] | None = None,
        max_batch: int = 256,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if not (math.isfinite(mu) and mu >= 0):
            raise ValueError(f"Invalid mu: {mu!r} (must be >= 0 and finite)")
        A, y = load_stock_returns() if data is None else (np.asarray(data[0], float), np.asarray(data[1], float))
        self.name = "logistic"
        self.noise_name = "data"
        self.mu = float(mu)
        self.n, self.dim = A.shape
        self._max_batch = int(max_batch)
        self.dtype = dtype
        self.device = torch.device(device)
        self.A64 = torch.from_numpy(A)
        self.y64 = torch.from_numpy(y)
        self.L = float(np.linalg.eigvalsh(A.T @ A).max() / (4 * self.n) + mu)
        self.sigma2 = float(np.mean(np.sum(A**2, axis=1)))
        self.x0 = torch.zeros(self.dim, dtype=torch.float64)
        self.x_star, self.f_star = self._newton()
        self._A = self.A64.to(self.device, dtype)
        self._y = self.y64.to(self.device, dtype)

    @property
    def max_batch(self) -> int:
        """The cap on m: a batch is drawn sample by sample, at runs·m·d cost per step."""
        return self._max_batch

    def value(self, x: Tensor) -> Tensor:
        """f(x) per row in float64 (softplus is exact for large |z|)."""
        x = x.to("cpu", torch.float64)
        z = x @ self.A64.T
        loss = (torch.nn.functional.softplus(z) - self.y64 * z).mean(dim=1)
        return loss + 0.5 * self.mu * x.square().sum(dim=1)

    def full_gradient(self, x: Tensor) -> Tensor:
        """∇f(x) per row in float64."""
        x = x.to("cpu", torch.float64)
        r = torch.sigmoid(x @ self.A64.T) - self.y64
        return r @ self.A64 / self.n + self.mu * x

    def gap(self, x: Tensor) -> Tensor:
        return self._finite_or_inf(self.value(x) - self.f_star)

    def draw(self, runs: int, batch: int, generator: torch.Generator, rng: np.random.Generator) -> Tensor:
        """Indices of the m samples of every run, drawn with replacement: ``(runs, m)``."""
        batch = min(int(batch), self._max_batch)
        return torch.randint(0, self.n, (runs, batch), generator=generator, device=self.device)

    def gradient_at(self, x: Tensor, draw: Tensor) -> Tensor:
        a = self._A[draw]  # (runs, m, d)
        r = torch.sigmoid(torch.einsum("rmd,rd->rm", a, x)) - self._y[draw]
        grad = torch.einsum("rm,rmd->rd", r, a).div_(draw.shape[1])
        if self.mu:
            grad.add_(x, alpha=self.mu)
        return grad

    def describe(self) -> dict:
        out = super().describe()
        residual = torch.sigmoid(self.A64 @ self.x_star) - self.y64
        norms = (self.A64 * residual[:, None]).norm(dim=1)
        kurt = ((self.A64[:, :-1] ** 4).mean(0) - 3).tolist()
        out.update(
            {
                "data": f"matplotlib sample_data/Stocks.csv: n = {self.n} monthly log-returns of "
                f"{', '.join(FEATURES)} (standardised) + intercept; y = 1[{TARGET} up]",
                "mu": self.mu,
                "excess_kurtosis_features": [round(k, 2) for k in kurt],
                "grad_norm_at_x_star_max_over_median": float(norms.max() / norms.median()),
                "oracle": "mean of m samples drawn uniformly with replacement",
                "max_batch": self._max_batch,
            }
        )
        return out

    def _newton(self) -> tuple[Tensor, float]:
        """Damped Newton's method in float64 (a few dozen iterations at most)."""
        A, y, n = self.A64, self.y64, self.n
        x = torch.zeros(self.dim, dtype=torch.float64)
        for _ in range(100):
            z = A @ x
            p = torch.sigmoid(z)
            grad = A.T @ (p - y) / n + self.mu * x
            if float(grad.norm()) <= 1e-13:
                break
            hess = (A.T * (p * (1 - p))) @ A / n + self.mu * torch.eye(self.dim, dtype=torch.float64)
            step = torch.linalg.solve(hess, grad)
            t, f0 = 1.0, float(self.value(x[None])[0])
            # Armijo backtracking: pure Newton can overshoot far from x*.
            while float(self.value((x - t * step)[None])[0]) > f0 - 0.25 * t * float(grad @ step) and t > 1e-10:
                t *= 0.5
            x = x - t * step
        else:
            raise ValueError("LogisticProblem: Newton's method did not converge (separable data? use mu > 0)")
        return x, float(self.value(x[None])[0])
