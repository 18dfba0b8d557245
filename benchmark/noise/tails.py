"""Tail statistics of the noise norms: the Hill index, excess kurtosis, max/median.

Each is compared with its value under the Gaussian reference of the same K
(:mod:`.reference`), never with a textbook constant: at K = 50 and in high dimension the
Gaussian values are far from the asymptotic ones.

References:
    Hill. A simple general approach to inference about the tail of a distribution.
    Annals of Statistics 3 (1975), 1163-1174.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["excess_kurtosis", "hill_estimator", "max_median_ratio"]


def hill_estimator(norms: Tensor, k: int | None = None) -> float:
    """The Hill estimate of the tail index of positive samples (here: noise norms).

    ``α̂_H = k / Σ_{i=1..k} log(X_(i) / X_(k+1))`` with X_(1) ≥ X_(2) ≥ … the order
    statistics. For a Pareto tail P(X > x) ∝ x^{-α} it is the maximum-likelihood estimate
    with standard deviation about α / sqrt(k). The norm of an SαS vector has tail index α,
    so for stable noise this estimates the same α as :func:`alpha_estimate`, from the
    largest norms only. For Gaussian noise in high dimension the norms concentrate and
    α̂_H is large (tens or more): compare it with the Gaussian reference of the same n and k
    (:meth:`~benchmark.noise.reference.GaussianNormReference.statistics`), not with 2.

    Args:
        norms: ``(n,)`` positive values.
        k: the number of upper order statistics; default ``max(2, floor(sqrt(n)))``, the
            usual compromise (k -> ∞, k/n -> 0) between variance (small k) and the bias of
            a tail that is only asymptotically Pareto (large k).

    Returns:
        α̂_H as a float (``inf`` if the k+1 largest values are all equal).

    Raises:
        ValueError: if the input is not 1-D, has non-positive or non-finite values, or
            ``k`` is not in [1, n-1].

    References:
        Hill, Annals of Statistics 1975.
    """
    x = torch.as_tensor(norms, dtype=torch.float64).detach().cpu()
    if x.dim() != 1 or x.numel() < 3:
        raise ValueError(f"Invalid norms: shape {tuple(x.shape)} (must be 1-D with >= 3 values)")
    if not (torch.isfinite(x).all() and (x > 0).all()):
        raise ValueError("Invalid norms: they must be finite and > 0")
    n = x.numel()
    k = max(2, math.isqrt(n)) if k is None else int(k)
    if not 1 <= k <= n - 1:
        raise ValueError(f"Invalid k: {k} (must be in [1, {n - 1}])")
    top = torch.sort(x, descending=True).values[: k + 1].log()
    mean_excess = float((top[:k] - top[k]).mean())
    return math.inf if mean_excess == 0 else 1.0 / mean_excess


def excess_kurtosis(values: Tensor) -> float:
    """Excess kurtosis ``m4 / m2² − 3`` (plug-in moments; 0 for a Gaussian).

    The plug-in estimator is biased for small n and bounded by about n; compare it with
    the Gaussian reference evaluated at the same n, as the summary does.

    Args:
        values: ``(n,)`` samples, n >= 2.

    Returns:
        The excess kurtosis (``nan`` if all values are equal).

    Raises:
        ValueError: for a non-1-D input, fewer than 2 values or non-finite values.
    """
    x = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if x.dim() != 1 or x.numel() < 2 or not torch.isfinite(x).all():
        raise ValueError(f"Invalid values: shape {tuple(x.shape)} (must be 1-D, finite, n >= 2)")
    c = x - x.mean()
    m2 = float((c**2).mean())
    return math.nan if m2 == 0 else float((c**4).mean()) / m2**2 - 3.0


def max_median_ratio(norms: Tensor) -> float:
    """``max(norms) / median(norms)``: how far the largest norm sits above the bulk.

    This is the quantity a clipping level has to cover: with a threshold at the median
    norm, the largest mini-batch gradient is scaled by 1/ratio.

    Raises:
        ValueError: for a non-1-D, empty or non-positive input.
    """
    x = torch.as_tensor(norms, dtype=torch.float64).detach().cpu()
    if x.dim() != 1 or x.numel() == 0 or not (torch.isfinite(x).all() and (x > 0).all()):
        raise ValueError("Invalid norms: must be a non-empty 1-D tensor of finite values > 0")
    # torch.median returns the lower middle value; the usual median averages the two.
    return float(x.max() / x.quantile(0.5))
