"""Pieces shared by the α-stable estimators: the result type, the default block size,
the clipping of α̂ to (0, 2] and the studentized (bootstrap-t) interval.

:mod:`.estimators` (α from noise vectors) and :mod:`.block_estimators` (α from block
norms streamed by the probe) both build on them.

References:
    Efron, Tibshirani. An Introduction to the Bootstrap, 1993 (bootstrap-t, ch. 12;
    block resampling, ch. 8).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "ALPHA_MAX",
    "AlphaEstimate",
    "check_interval_settings",
    "clip_alpha",
    "default_block_size",
    "studentized_interval",
]

#: α of the Gaussian, the upper end of the stable family.
ALPHA_MAX = 2.0


@dataclass(frozen=True)
class AlphaEstimate:
    """A tail-index estimate with its bootstrap interval.

    Attributes:
        alpha: the point estimate, clipped to (0, 2].
        low, high: the studentized block-bootstrap interval at ``confidence``, clipped
            to (0, 2] (see :func:`alpha_estimate_with_ci` for its measured coverage).
        confidence: the interval's nominal level.
        raw: the unclipped 1 / (1/α̂); ``inf`` when the block sums did not grow at all.
        block_size: m.
        num_samples: N, the number of noise vectors used.
        num_partitions: R, the random partitions averaged in the point estimate.
        by_block_size: α̂ at other block sizes (m -> α̂). A stable law gives the same α
            at every m; a trend with m says the noise is not stable (only in its domain
            of attraction, or a mixture) and the estimate depends on the scale probed.
        centered: whether the samples were centred on their mean (``center=True``).
    """

    alpha: float
    low: float
    high: float
    confidence: float
    raw: float
    block_size: int
    num_samples: int
    num_partitions: int
    by_block_size: dict[int, float] = field(default_factory=dict)
    centered: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (block sizes become string keys)."""
        d = asdict(self)
        d["by_block_size"] = {str(k): v for k, v in self.by_block_size.items()}
        return d


def default_block_size(num_samples: int) -> int:
    """The block size m used when none is given: ``clamp(N // 10, 2, 10)``.

    Near-optimal variance for stable noise (minimum near m = e²) while keeping at least
    10 blocks, which the bootstrap interval needs (N = 50 mini-batches give m = 5).
    """
    return max(2, min(10, max(num_samples, 0) // 10))


def clip_alpha(inv: float) -> tuple[float, float]:
    """(clipped α, raw α) from 1/α̂."""
    raw = math.inf if inv <= 0 else 1.0 / inv
    return min(raw, ALPHA_MAX), raw


def check_interval_settings(num_bootstrap: int, confidence: float) -> None:
    """Raise ValueError for a ``confidence`` outside (0, 1) or ``num_bootstrap < 10``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"Invalid confidence: {confidence} (must be in (0, 1))")
    if num_bootstrap < 10:
        raise ValueError(f"Invalid num_bootstrap: {num_bootstrap} (must be >= 10)")


def studentized_interval(
    theta: float,
    draw_z: Callable[[], Tensor],
    num_bootstrap: int,
    confidence: float,
    gen: torch.Generator,
) -> tuple[float, float]:
    """Bootstrap-t interval (lower, upper) for θ = E z from per-block contributions z.

    ``draw_z()`` returns the n block contributions ``z_i = log‖Y_i‖ − mean_j log‖X_ij‖``
    of one partition (a fresh random one, or the fixed one of streamed blocks); ``theta``
    is the point estimate of E z. Studentized rather than percentile: the spread of z is
    small exactly in the samples that missed the tail (α̂ too high, interval too narrow),
    which a percentile interval cannot see; dividing by each replicate's own standard
    error corrects most of it.
    """
    t_stars = torch.full((num_bootstrap,), math.nan, dtype=torch.float64)
    ses = torch.empty(num_bootstrap, dtype=torch.float64)
    for b in range(num_bootstrap):
        z = draw_z()
        n = z.numel()
        ses[b] = z.std() / math.sqrt(n)
        zs = z[torch.randint(n, (n,), generator=gen)]
        se_star = float(zs.std()) / math.sqrt(n)
        if se_star > 0:  # all n draws hit one block: no spread, no t-statistic
            t_stars[b] = (float(zs.mean()) - float(z.mean())) / se_star
    if torch.isnan(t_stars).all():  # every block identical: no sampling spread to report
        return theta, theta
    tail = (1.0 - confidence) / 2.0
    t_lo, t_hi = torch.nanquantile(t_stars, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    se = float(ses.mean())  # single-partition standard error: conservative for an average
    return theta - t_hi * se, theta - t_lo * se
