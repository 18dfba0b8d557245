"""The α estimator from block norms summed by the caller: the probe's streaming form.

:class:`~benchmark.noise.probe.GradientNoiseProbe` keeps one running block sum of
full-dimensional noise vectors and records ``‖Y_i‖`` when a block of m is complete, so
the published estimator (Mohammadi et al. 2015) runs in full dimension without storing
any vector. See :mod:`.estimators` for the estimator itself and why it is formulated on
norms of whole noise vectors.

References:
    Mohammadi, Mohammadpour, Ogata. On estimating the tail index and the spectral measure
    of multivariate α-stable distributions. Metrika 78 (2015), 549-561.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .stable_core import (
    AlphaEstimate,
    check_interval_settings,
    clip_alpha,
    studentized_interval,
)

__all__ = ["alpha_from_blocks", "alpha_from_blocks_with_ci"]


def _check_blocks(block_norms: Tensor, member_norms: Tensor) -> tuple[Tensor, Tensor]:
    y = torch.as_tensor(block_norms, dtype=torch.float64).detach().cpu()
    x = torch.as_tensor(member_norms, dtype=torch.float64).detach().cpu()
    if y.dim() != 1 or x.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"Invalid shapes: block_norms {tuple(y.shape)}, member_norms {tuple(x.shape)} "
            "(must be (n,) and (n, m))"
        )
    if x.shape[1] < 2 or y.shape[0] < 2:
        raise ValueError(f"Invalid blocks: {y.shape[0]} blocks of {x.shape[1]} (need >= 2 of >= 2)")
    if not (torch.isfinite(x).all() and torch.isfinite(y).all() and (x > 0).all() and (y > 0).all()):
        raise ValueError("Invalid norms: they must be finite and > 0")
    return y, x


def alpha_from_blocks(block_norms: Tensor, member_norms: Tensor) -> float:
    """The published estimator from norms already summed by the caller (streaming form).

    :class:`~benchmark.noise.probe.GradientNoiseProbe` keeps one running block sum of
    full-dimensional noise vectors and records ``‖Y_i‖`` when a block of m is complete,
    so the estimator runs in full dimension without storing any vector (one fixed
    partition: no averaging over partitions is possible).

    Args:
        block_norms: ``(n,)`` the norms ‖Y_i‖ of the block sums.
        member_norms: ``(n, m)`` the norms ‖X_j‖ of each block's members.

    Returns:
        α̂ in (0, 2].

    Raises:
        ValueError: for mismatched shapes, ``m < 2``, fewer than 2 blocks, non-positive
            or non-finite norms.

    References:
        Mohammadi, Mohammadpour, Ogata, Metrika 2015.
    """
    y, x = _check_blocks(block_norms, member_norms)
    return clip_alpha(float((y.log().mean() - x.log().mean()) / math.log(x.shape[1])))[0]


def alpha_from_blocks_with_ci(
    block_norms: Tensor,
    member_norms: Tensor,
    *,
    num_bootstrap: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> AlphaEstimate:
    """:func:`alpha_from_blocks` with the bootstrap-t interval over its fixed blocks.

    Args:
        block_norms, member_norms: as :func:`alpha_from_blocks`.
        num_bootstrap, confidence, seed: as :func:`alpha_estimate_with_ci`.

    Returns:
        An :class:`AlphaEstimate` (``num_partitions`` 1, no other block sizes).

    Raises:
        ValueError: as :func:`alpha_from_blocks` and :func:`alpha_estimate_with_ci`.
    """
    check_interval_settings(num_bootstrap, confidence)
    y, x = _check_blocks(block_norms, member_norms)
    m = x.shape[1]
    z = y.log() - x.log().mean(1)
    alpha, raw = clip_alpha(float(z.mean()) / math.log(m))
    gen = torch.Generator().manual_seed(seed)
    theta_lo, theta_hi = studentized_interval(float(z.mean()), lambda: z, num_bootstrap, confidence, gen)
    low, high = clip_alpha(theta_hi / math.log(m))[0], clip_alpha(theta_lo / math.log(m))[0]
    return AlphaEstimate(
        alpha=alpha,
        low=min(low, alpha),
        high=max(high, alpha),
        confidence=confidence,
        raw=raw,
        block_size=m,
        num_samples=x.numel(),
        num_partitions=1,
    )

