"""Heavy-tail diagnostics of stochastic gradient noise (is this task heavy-tailed?).

The thesis's claim is conditional: clipping helps when stochastic gradients are
heavy-tailed. This package measures that condition.

* :mod:`.estimators`: the α-stable tail index of Mohammadi et al. (2015) as used by
  Simsekli et al. (2019) (:func:`alpha_estimate`, :func:`alpha_estimate_with_ci`), with
  :mod:`.stable_core` (result type, bootstrap-t interval), :mod:`.block_estimators` (the
  streamed-block form) and :mod:`.tails` (Hill, kurtosis, max/median), all re-exported.
* :mod:`.reference`: the distribution of ‖ξ‖ for Gaussian noise of the same covariance
  moments.
* :mod:`.probe`: :class:`GradientNoiseProbe`, streaming ‖∇f(x, ξ) − ∇f(x)‖ at O(#params)
  memory, DDP-aware, for any model whose loss is a scalar (images or integer tokens);
  :mod:`.stream` keeps the running statistics, :mod:`.runtime` the device/RNG helpers,
  :mod:`.result` what a probe measured.
* :mod:`.summary`: statistics + reference + the heavy-tail rule for one probe.
* :mod:`.callback`: :class:`GradientNoiseCallback`, the probe every N training steps, at
  one or several noise batch sizes.
* :mod:`.plots`: histogram, QQ plot, α trajectory, markdown table.
* :mod:`.report`: results folders: write (table, CSV, JSON lines), read,
  :func:`~.report.noise_section` for reports.
* :mod:`.runner`: one task's probe run (its ``fit`` with the callback; plumbing in
  :mod:`.run_support`), :mod:`.cli`: ``python -m benchmark noise`` (``make noise``) over a
  list of :class:`~.cli.ProbeTarget`, its top-level files written by :mod:`.outputs`.
"""

from typing import Any

from .estimators import (
    AlphaEstimate,
    alpha_estimate,
    alpha_estimate_with_ci,
    alpha_from_blocks,
    alpha_from_blocks_with_ci,
    excess_kurtosis,
    hill_estimator,
    max_median_ratio,
)
from .probe import GradientNoiseProbe
from .reference import GaussianNormReference, GaussianStatistics
from .result import ProbeResult
from .summary import ALPHA_THRESHOLD, NoiseSummary, heavy_tail_rule, summarize

__all__ = [
    "ALPHA_THRESHOLD",
    "AlphaEstimate",
    "GaussianNormReference",
    "GaussianStatistics",
    "GradientNoiseCallback",
    "GradientNoiseProbe",
    "NoiseSummary",
    "ProbeResult",
    "alpha_estimate",
    "alpha_estimate_with_ci",
    "alpha_from_blocks",
    "alpha_from_blocks_with_ci",
    "excess_kurtosis",
    "heavy_tail_rule",
    "hill_estimator",
    "max_median_ratio",
    "summarize",
]


def __getattr__(name: str) -> Any:
    # The callback pulls in pytorch_lightning (seconds to import): load it on first use so
    # that `from benchmark.noise import alpha_estimate` stays light.
    if name == "GradientNoiseCallback":
        from .callback import GradientNoiseCallback

        return GradientNoiseCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
