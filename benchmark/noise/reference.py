"""The Gaussian reference: how ‖ξ‖ would be distributed if the noise were Gaussian.

"A Gaussian with the same covariance trace" does not fix the distribution of ‖ξ‖: for
ξ ~ N(0, Σ), ‖ξ‖² = Σ_i λ_i Z_i² with λ_i the eigenvalues of Σ, and the isotropic choice
(all λ_i equal, D of them) makes ‖ξ‖ a spike at sqrt(tr Σ) when D is the parameter count
(11 M for ResNet-18): every real noise would then look heavy-tailed. The reference used
here matches the first *two* moments of ‖ξ‖², i.e. tr Σ and tr Σ², and approximates the
weighted chi-square by a scaled chi-square (Welch-Satterthwaite):

    ‖ξ‖² ≈ c · χ²_ν,   c = tr Σ² / tr Σ,   ν = (tr Σ)² / tr Σ²   (ν: effective rank),

so ‖ξ‖ ≈ sqrt(c) · chi_ν. Both traces come from the probe's streamed statistics:
tr Σ = E‖ξ‖² (the mean squared noise norm) and tr Σ² = E[(ξ·ξ')²] for independent ξ, ξ',
estimated on differences of disjoint pairs of mini-batch noises (mean-free; one extra
gradient-sized buffer). The second estimate does not use the spread of the norms, so
the reference is not fitted to the tail it is compared with. Under heavy tails tr Σ is dominated by the largest norms and the reference then
sits to the right of the bulk of the histogram, which is itself a heavy-tail signature.

References:
    Satterthwaite. An approximate distribution of estimates of variance components.
    Biometrics Bulletin 2 (1946), 110-114. Welch, Biometrika 34 (1947), 28-35.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["GaussianNormReference", "GaussianStatistics"]


@dataclass(frozen=True)
class GaussianStatistics:
    """What the summary statistics of n Gaussian-reference norms look like.

    Each field is the median over ``reps`` simulated samples of n norms, except
    ``max_median_q95``, the 95th percentile of the max/median ratio (the threshold of the
    heavy-tail rule: a larger ratio happens in 5 % of Gaussian samples of the same size).
    """

    n: int
    k: int
    reps: int
    max_median: float
    max_median_q95: float
    kurtosis: float
    hill: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GaussianNormReference:
    """``‖ξ‖ ≈ scale · chi_dof`` for Gaussian noise of a given covariance trace (and tr Σ²).

    Attributes:
        scale: sqrt(c), c = tr Σ² / tr Σ.
        dof: ν = (tr Σ)² / tr Σ², clipped to [1, dim]: the effective rank.
        trace: tr Σ (= E‖ξ‖²).
        trace_sq: tr Σ², or None for the isotropic reference.
        dim: the dimension D of ξ (the parameter count).
    """

    scale: float
    dof: float
    trace: float
    trace_sq: float | None
    dim: int

    @classmethod
    def from_moments(cls, trace: float, trace_sq: float | None, dim: int) -> GaussianNormReference:
        """The moment-matched reference (isotropic when ``trace_sq`` is None or 0).

        Args:
            trace: tr Σ = E‖ξ‖² > 0.
            trace_sq: tr Σ² = E[(ξ·ξ')²] >= 0, or None.
            dim: D >= 1.

        Raises:
            ValueError: for a non-positive or non-finite trace, a negative trace_sq, or dim < 1.
        """
        if not (math.isfinite(trace) and trace > 0):
            raise ValueError(f"Invalid trace: {trace} (must be finite and > 0)")
        if dim < 1:
            raise ValueError(f"Invalid dim: {dim} (must be >= 1)")
        if trace_sq is None or trace_sq == 0:
            return cls.isotropic(trace, dim)
        if not (math.isfinite(trace_sq) and trace_sq > 0):
            raise ValueError(f"Invalid trace_sq: {trace_sq} (must be finite and >= 0)")
        # tr Σ² <= (tr Σ)² <= D tr Σ² for any PSD Σ; sampling error can leave that range.
        dof = min(max(trace**2 / trace_sq, 1.0), float(dim))
        return cls(scale=math.sqrt(trace / dof), dof=dof, trace=trace, trace_sq=trace_sq, dim=dim)

    @classmethod
    def isotropic(cls, trace: float, dim: int) -> GaussianNormReference:
        """Σ = (tr Σ / D)·I: exactly ``sqrt(tr Σ / D) · chi_D`` (a spike for large D)."""
        if not (math.isfinite(trace) and trace > 0) or dim < 1:
            raise ValueError(f"Invalid trace/dim: {trace}, {dim} (must be > 0 and >= 1)")
        return cls(scale=math.sqrt(trace / dim), dof=float(dim), trace=trace, trace_sq=None, dim=dim)

    @property
    def distribution(self) -> Any:
        """The frozen ``scipy.stats.chi`` law of ‖ξ‖."""
        return stats.chi(df=self.dof, scale=self.scale)

    def pdf(self, r: np.ndarray) -> np.ndarray:
        """The density of ‖ξ‖ at r (for the histogram overlay)."""
        return self.distribution.pdf(np.asarray(r, dtype=np.float64))

    def ppf(self, q: np.ndarray) -> np.ndarray:
        """The quantiles of ‖ξ‖ (for the QQ plot)."""
        return self.distribution.ppf(np.asarray(q, dtype=np.float64))

    def sample(self, size: int | tuple[int, ...], seed: int = 0) -> np.ndarray:
        """Draws of ‖ξ‖ (numpy's chi-square accepts a non-integer ν)."""
        rng = np.random.default_rng(seed)
        return self.scale * np.sqrt(rng.chisquare(self.dof, size=size))

    def statistics(self, n: int, k: int | None = None, reps: int = 2000, seed: int = 0) -> GaussianStatistics:
        """The statistics of the summary for n reference norms, by simulation.

        The same finite-n estimators are applied to Gaussian samples of the same size, so
        their small-sample biases (plug-in kurtosis, max/median growing like
        sqrt(2 log n)/sqrt(ν), Hill at a fixed k) cancel in the comparison.

        Args:
            n: the number of noise norms (K), >= 3.
            k: the Hill k; default as :func:`~benchmark.noise.estimators.hill_estimator`.
            reps: simulated samples.
            seed: the simulation seed.

        Raises:
            ValueError: for n < 3 or reps < 20.
        """
        if n < 3 or reps < 20:
            raise ValueError(f"Invalid n/reps: {n}, {reps} (need n >= 3, reps >= 20)")
        k = max(2, math.isqrt(n)) if k is None else int(k)
        r = self.sample((reps, n), seed=seed)
        ratio = r.max(axis=1) / np.median(r, axis=1)
        c = r - r.mean(axis=1, keepdims=True)
        m2 = (c**2).mean(axis=1)
        kurt = np.where(m2 > 0, (c**4).mean(axis=1) / np.where(m2 > 0, m2, 1.0) ** 2 - 3.0, np.nan)
        # Vectorised twin of estimators.hill_estimator (a test keeps the two in step).
        top = np.log(-np.sort(-r, axis=1)[:, : k + 1])
        excess = (top[:, :k] - top[:, k : k + 1]).mean(axis=1)
        hill = np.where(excess > 0, 1.0 / np.where(excess > 0, excess, 1.0), np.inf)
        return GaussianStatistics(
            n=n,
            k=k,
            reps=reps,
            max_median=float(np.median(ratio)),
            max_median_q95=float(np.quantile(ratio, 0.95)),
            kurtosis=float(np.nanmedian(kurt)),
            hill=float(np.median(hill)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
