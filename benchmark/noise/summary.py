"""From a probe's measurements to the per-task verdict: statistics, reference, rule.

The heavy-tail rule (:func:`heavy_tail_rule`), stated once:

    heavy-tailed  ⇔  α_high < 1.9   and   max/median > q95 of the Gaussian reference.

* ``α_high < 1.9``: the whole confidence interval of the stable index lies below 1.9,
  i.e. block sums of noise vectors grow significantly faster than sqrt(m), the
  signature of infinite variance that clipping analyses assume. 1.9 rather than 2
  leaves room for the estimator's small-sample bias (about ±0.03 at K = 50) and for
  noise that is only close to stable. The α estimator is covariance-free (exact for any
  Gaussian), so this condition is what keeps the false-alarm rate low.
* ``max/median > q95``: the tail is visible in the norms that norm clipping acts on:
  the largest of the K mini-batch noise norms exceeds what 95 % of Gaussian samples of
  the same size and covariance moments would give. On its own this condition is not
  calibrated (the two-moment Gaussian reference understates the Gaussian tail when a
  few directions dominate the covariance: 12-35 % false alarms measured at K = 50 for
  spectra 1/sqrt(i), 1/i and 1/i²), which is why the rule requires both.

Measured with :meth:`~benchmark.noise.result.ProbeResult.from_noise` on synthetic noise
(D = 2000, p = 1000, 30 samples per case, K = 50): "heavy" 0/30 for every Gaussian tested
(isotropic; covariance spectra 1/sqrt(i), 1/i, 1/i²; log-uniform coordinate scales; the
isotropic and 1/i ones also with a mean of 2 % of tr Σ), 30/30 for SαS α = 1.2, 29-30/30 for α = 1.5, and 1-3/30
for α = 1.8 (2-5/30 at K = 100): α = 1.8 is not resolved by K <= 100 mini-batches, its
interval reaches 1.9.

References:
    Simsekli, Sagun, Gürbüzbalaban. ICML 2019 (α as the tail measure).
    Zhang, Karimireddy, Veit, Kim, Reddi, Kumar, Sra. Why are adaptive methods good for
    attention models? NeurIPS 2020 (heavy-tailed noise and clipping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from .estimators import (
    AlphaEstimate,
    alpha_estimate_with_ci,
    alpha_from_blocks,
    alpha_from_blocks_with_ci,
    excess_kurtosis,
    hill_estimator,
    max_median_ratio,
)
from .reference import GaussianNormReference, GaussianStatistics
from .result import ProbeResult

__all__ = ["ALPHA_THRESHOLD", "SHIFT_Z", "NoiseSummary", "heavy_tail_rule", "summarize"]

#: The α upper confidence bound below which the noise counts as heavy-tailed.
ALPHA_THRESHOLD = 1.9

#: z-score above which the mean-shift ratio says the noise is not centred (see summarize).
SHIFT_Z = 3.0


def heavy_tail_rule(alpha_high: float | None, max_median: float, max_median_gauss_q95: float) -> bool:
    """``α_high < 1.9 and max/median > q95 of the Gaussian reference`` (module docstring).

    Args:
        alpha_high: the upper end of the α interval (None: no estimate, never heavy).
        max_median: the measured max/median noise-norm ratio.
        max_median_gauss_q95: its 95th percentile under the Gaussian reference.

    Returns:
        True if the noise is heavy-tailed by the rule.
    """
    if alpha_high is None or math.isnan(alpha_high):
        return False
    return alpha_high < ALPHA_THRESHOLD and max_median > max_median_gauss_q95


@dataclass(frozen=True)
class NoiseSummary:
    """Everything the table, the plots and the loggers show for one probe.

    Attributes:
        task, step: labels (the task name, the global step probed).
        alpha: the α estimate with its interval (from the sketches, else the blocks).
        alpha_source: ``"sketch"`` or ``"blocks"``.
        alpha_blocks: the full-dimensional streamed-block estimate (cross-check), or None.
        hill, hill_k: the Hill index of the norms and its k.
        kurtosis: excess kurtosis of the norms.
        max_median: max/median of the norms.
        gaussian: the Gaussian reference of the norms.
        gaussian_stats: the same statistics under the reference (same K and k).
        mean_shift_ratio: ‖Σ_t Sξ_t‖² / Σ_t ‖Sξ_t‖², about 1 for mean-zero noise; well
            above 1 means the full gradient does not match the batches' mean (BatchNorm's
            batch coupling, or a subset/transform mismatch), which would bias α̂ down; α
            is then estimated on centred sketches (``alpha.centered``). None without
            sketches.
        sketch_distortion: median |log(‖Sξ‖ / ‖ξ‖)| of the sketch, None without sketches.
        noise_to_gradient: median noise norm / ‖∇f(x)‖.
        heavy_tailed: :func:`heavy_tail_rule`.
        norms: the K noise norms (for the plots and the W&B histogram).
    """

    task: str | None
    step: int | None
    num_batches: int
    batch_size: int
    subset_size: int
    num_params: int
    alpha: AlphaEstimate | None
    alpha_source: str
    alpha_blocks: float | None
    hill: float
    hill_k: int
    kurtosis: float
    max_median: float
    gaussian: GaussianNormReference
    gaussian_stats: GaussianStatistics
    mean_shift_ratio: float | None
    sketch_distortion: float | None
    full_grad_norm: float
    noise_to_gradient: float
    time_s: float
    state_bytes: int
    heavy_tailed: bool
    norms: list[float] = field(repr=False, default_factory=list)

    def metrics(self, prefix: str = "noise/") -> dict[str, float]:
        """Scalar metrics for a logger (``noise/alpha``, ``noise/alpha_low``, ..., ``noise/batch_size``)."""
        out = {
            "alpha": self.alpha.alpha if self.alpha else math.nan,
            "alpha_low": self.alpha.low if self.alpha else math.nan,
            "alpha_high": self.alpha.high if self.alpha else math.nan,
            "alpha_blocks": math.nan if self.alpha_blocks is None else self.alpha_blocks,
            "hill": self.hill,
            "hill_gauss": self.gaussian_stats.hill,
            "kurtosis": self.kurtosis,
            "kurtosis_gauss": self.gaussian_stats.kurtosis,
            "max_median": self.max_median,
            "max_median_gauss": self.gaussian_stats.max_median,
            "max_median_gauss_q95": self.gaussian_stats.max_median_q95,
            "effective_dim": self.gaussian.dof,
            "noise_to_gradient": self.noise_to_gradient,
            "heavy_tailed": float(self.heavy_tailed),
            "time_s": self.time_s,
            "batch_size": self.batch_size,
        }
        return {prefix + k: float(v) for k, v in out.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``inf``/``nan`` stay floats: use allow_nan)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["alpha"] = self.alpha.to_dict() if self.alpha else None
        d["gaussian"] = self.gaussian.to_dict()
        d["gaussian_stats"] = self.gaussian_stats.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseSummary:
        """The inverse of :meth:`to_dict` (for reports built from a results folder)."""
        d = dict(d)
        if d.get("alpha") is not None:
            a = dict(d["alpha"])
            a["by_block_size"] = {int(k): v for k, v in a.get("by_block_size", {}).items()}
            d["alpha"] = AlphaEstimate(**a)
        d["gaussian"] = GaussianNormReference(**d["gaussian"])
        d["gaussian_stats"] = GaussianStatistics(**d["gaussian_stats"])
        return cls(**d)


def summarize(
    result: ProbeResult,
    *,
    task: str | None = None,
    step: int | None = None,
    confidence: float = 0.95,
    num_bootstrap: int = 200,
    hill_k: int | None = None,
    seed: int = 0,
) -> NoiseSummary:
    """Compute the statistics, the Gaussian reference and the verdict of one probe.

    Args:
        result: a :class:`~benchmark.noise.probe.ProbeResult`.
        task, step: labels carried into the summary.
        confidence: the level of the α interval.
        num_bootstrap: bootstrap replicates for the α interval.
        hill_k: the Hill k (default floor(sqrt(K))).
        seed: seeds the bootstrap and the reference simulation.

    Returns:
        A :class:`NoiseSummary`.

    Raises:
        ValueError: if the result holds fewer than 4 noise norms or a zero norm.
    """
    norms = result.norms.to(torch.float64)
    k = norms.numel()
    if k < 4:
        raise ValueError(f"Invalid result: {k} noise norms (need >= 4)")
    sketch = _sketch_statistics(result.sketches, norms)
    alpha, source = _alpha_of(result, sketch, num_bootstrap=num_bootstrap, confidence=confidence, seed=seed)
    alpha_blocks = (
        alpha_from_blocks(result.block_norms, result.block_member_norms)
        if result.block_norms.numel() >= 2
        else None
    )
    hk = max(2, math.isqrt(k)) if hill_k is None else int(hill_k)
    reference = GaussianNormReference.from_moments(result.trace, result.trace_sq, result.num_params)
    gstats = reference.statistics(k, hk, seed=seed)
    mm = max_median_ratio(norms)
    return NoiseSummary(
        task=task,
        step=step,
        num_batches=k,
        batch_size=result.batch_size,
        subset_size=result.subset_size,
        num_params=result.num_params,
        alpha=alpha,
        alpha_source=source,
        alpha_blocks=alpha_blocks,
        hill=hill_estimator(norms, hk),
        hill_k=hk,
        kurtosis=excess_kurtosis(norms),
        max_median=mm,
        gaussian=reference,
        gaussian_stats=gstats,
        mean_shift_ratio=None if sketch is None else sketch.shift,
        sketch_distortion=None if sketch is None else sketch.distortion,
        full_grad_norm=result.full_grad_norm,
        noise_to_gradient=_noise_to_gradient(norms, result.full_grad_norm),
        time_s=result.time_s,
        state_bytes=result.state_bytes,
        heavy_tailed=heavy_tail_rule(alpha.high if alpha else None, mm, gstats.max_median_q95),
        norms=norms.tolist(),
    )


@dataclass(frozen=True)
class _SketchStatistics:
    """What the sketches say before α is estimated on them (see :func:`_sketch_statistics`)."""

    sketches: torch.Tensor  # (K, p), float64
    shift: float  # mean-shift ratio ‖Σ_t Sξ_t‖² / Σ_t ‖Sξ_t‖²
    distortion: float  # median |log(‖Sξ‖ / ‖ξ‖)|
    center: bool  # the shift is significant: estimate α on centred sketches


def _sketch_statistics(sketches: torch.Tensor | None, norms: torch.Tensor) -> _SketchStatistics | None:
    """The mean-shift ratio, the sketch's norm distortion and whether to centre; None without sketches."""
    if sketches is None:
        return None
    k = norms.numel()
    s = sketches.to(torch.float64)
    sq = (s**2).sum(1)
    shift = float((s.sum(0) ** 2).sum() / sq.sum())
    distortion = float((sq.sqrt() / norms).log().abs().median())
    # Under mean-zero Gaussian noise the ratio is ≈ χ²_ν/ν with ν the sketch's
    # effective rank: sd sqrt(2/ν). ν from mean-free pair differences, as for the
    # reference (a mean would inflate tr Σ² and hide itself). Heavy tails make the
    # ratio *closer* to 1 (one vector dominates both sums).
    u = s[0 : 2 * (k // 2) : 2] - s[1 : 2 * (k // 2) : 2]
    pair_sq = float(((u[1:] * u[:-1]).sum(1) ** 2).mean())
    nu = float((u**2).sum(1).mean() ** 2) / pair_sq if pair_sq > 0 else math.inf
    center = shift > 1.0 + SHIFT_Z * math.sqrt(2.0 / nu)
    return _SketchStatistics(s, shift, distortion, center)


def _alpha_of(
    result: ProbeResult,
    sketch: _SketchStatistics | None,
    *,
    num_bootstrap: int,
    confidence: float,
    seed: int,
) -> tuple[AlphaEstimate | None, str]:
    """The α estimate with its interval and its source: the sketches, else the streamed blocks."""
    if sketch is not None:
        alpha = alpha_estimate_with_ci(
            sketch.sketches, num_bootstrap=num_bootstrap, confidence=confidence, center=sketch.center, seed=seed
        )
        return alpha, "sketch"
    if result.block_norms.numel() >= 2:
        alpha = alpha_from_blocks_with_ci(
            result.block_norms, result.block_member_norms,
            num_bootstrap=num_bootstrap, confidence=confidence, seed=seed,
        )
        return alpha, "blocks"
    return None, "none"


def _noise_to_gradient(norms: torch.Tensor, full_grad_norm: float) -> float:
    """Median noise norm / ‖∇f(x)‖ (nan when the full gradient is unknown or zero)."""
    if math.isfinite(full_grad_norm) and full_grad_norm > 0:
        return float(norms.quantile(0.5)) / full_grad_norm
    return math.nan
