"""Statistics of a benchmark table: intervals over seeds, paired verdicts, significant bests.

Seed ``s`` gives every optimizer the same initial weights and the same data order, so the
runs of two optimizers with the same seed form a pair, and comparisons are paired:

- **A cell** is the mean over seeds with a two-sided 95% Student-t confidence interval,
  ``mean ± t_{0.975, n-1} · sd / sqrt(n)`` (:func:`mean_ci`).
- **A paired difference** to the baseline (SGD by default) is the mean over common seeds
  of ``value(optimizer, s) - value(baseline, s)`` with its 95% paired-t interval
  (:func:`paired_difference`, ``scipy.stats.ttest_rel``). The verdict is *better* or
  *worse* when the interval excludes 0 (the sign read with the metric's direction), *no
  detectable difference* when it contains 0, and *too few seeds* below two pairs.
- **A significantly best cell** (bold in the report, :func:`significantly_best`) is one
  whose paired difference to every other optimizer of the row is significantly in its
  favour: two-sided paired t-tests against each of the other ``m`` optimizers, their
  p-values corrected for the ``m`` comparisons with Holm's step-down method, all below
  ``alpha`` (0.05), and every difference of the favourable sign. With one other optimizer
  this is exactly a *better* verdict against it. At most one cell of a row can be bold;
  often none is.

References:
    Student (1908), "The probable error of a mean", Biometrika 6(1).
    S. Holm (1979), "A simple sequentially rejective multiple test procedure",
    Scandinavian Journal of Statistics 6(2).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "BETTER",
    "METHOD",
    "NO_DIFFERENCE",
    "TOO_FEW",
    "WORSE",
    "Interval",
    "Paired",
    "holm",
    "mean_ci",
    "paired_difference",
    "significantly_best",
]

BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no detectable difference", "too few seeds"

#: One paragraph for reports: how the cells, verdicts and bold were computed.
METHOD = (
    "Cells: mean over seeds ± the half-width of a two-sided 95% Student-t confidence interval. "
    "Paired difference: the mean over common seeds of (optimizer − baseline), with its 95% paired-t "
    "interval (seed s gives every optimizer the same initial weights and data order); the verdict is "
    "better / worse when the interval excludes 0, else no detectable difference. Bold: significantly "
    "best — two-sided paired t-tests against every other optimizer of the row, Holm-corrected, all "
    "p < 0.05 and every difference in its favour (scipy.stats.ttest_rel)."
)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval (``nan`` bounds when ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Paired:
    """A paired difference ``optimizer - baseline`` over common seeds, and its verdict."""

    diff: Interval
    p_value: float
    verdict: str
    seeds: tuple[int, ...]


def _values(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"Invalid values: {values!r} (must be a non-empty 1-D sequence of numbers)")
    if not np.isfinite(array).all():
        raise ValueError(f"Invalid values: {values!r} (must be finite; a diverged run has no metric to average)")
    return array


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"Invalid confidence: {confidence!r} (must be in (0, 1), e.g. 0.95)")


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t confidence interval over seeds.

    Args:
        values: one value per seed.
        confidence: coverage of the interval.

    Returns:
        The :class:`Interval`; with one value its bounds are ``nan`` (no spread to estimate).

    Raises:
        ValueError: empty or non-finite ``values``, or ``confidence`` outside (0, 1).
    """
    _check_confidence(confidence)
    x = _values(values)
    mean = float(x.mean())
    if x.size < 2:
        return Interval(mean, math.nan, math.nan, 1, confidence)
    sem = float(sps.sem(x))  # sd (ddof=1) / sqrt(n)
    if sem == 0.0:
        return Interval(mean, mean, mean, int(x.size), confidence)
    low, high = sps.t.interval(confidence, df=x.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), int(x.size), confidence)


def _pairs(values: Mapping[int, float], baseline: Mapping[int, float]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    seeds = tuple(sorted(set(values) & set(baseline)))
    if not seeds:
        return seeds, np.empty(0), np.empty(0)
    return seeds, _values([values[s] for s in seeds]), _values([baseline[s] for s in seeds])


def _ttest_rel(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(t statistic, two-sided p-value) of the paired t-test. A constant difference has
    no spread, where scipy's statistic is undefined: a constant nonzero difference is
    taken as certain (p = 0), a constant zero difference as none (p = 1)."""
    d = a - b
    if np.all(d == d[0]):
        return (math.copysign(math.inf, d[0]) if d[0] else 0.0), (0.0 if d[0] else 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sps.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def paired_difference(
    values: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    higher_is_better: bool,
    confidence: float = 0.95,
) -> Paired:
    """Paired difference to the baseline over the seeds both have, with a verdict.

    Args:
        values: seed -> metric of the optimizer.
        baseline: seed -> metric of the baseline optimizer.
        higher_is_better: the metric's direction (accuracy: True, loss or bpc: False).
        confidence: coverage of the paired-t interval (the test's level is 1 - confidence).

    Returns:
        The :class:`Paired` result; verdict ``better``/``worse`` when the interval
        excludes 0, ``no detectable difference`` otherwise, ``too few seeds`` with fewer
        than two common seeds.

    Raises:
        ValueError: no common seed, non-finite values, or ``confidence`` outside (0, 1).
    """
    _check_confidence(confidence)
    seeds, a, b = _pairs(values, baseline)
    if not seeds:
        raise ValueError(
            f"Invalid pairing: the optimizer has seeds {sorted(values)} and the baseline {sorted(baseline)} "
            "(a paired comparison needs runs with the same seeds)"
        )
    diff = mean_ci(a - b, confidence)
    if len(seeds) < 2:
        return Paired(diff, math.nan, TOO_FEW, seeds)
    _, p = _ttest_rel(a, b)
    if diff.low > 0 or diff.high < 0:
        verdict = BETTER if (diff.mean > 0) == higher_is_better else WORSE
    else:
        verdict = NO_DIFFERENCE
    return Paired(diff, p, verdict, seeds)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order.

    The ``i``-th smallest of ``m`` p-values is multiplied by ``m - i + 1`` (``i`` from
    1), made non-decreasing along the sorted order and capped at 1; rejecting every
    adjusted p-value below ``alpha`` controls the family-wise error rate at ``alpha``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def significantly_best(
    cells: Mapping[str, Mapping[int, float]],
    *,
    higher_is_better: bool,
    alpha: float = 0.05,
) -> str | None:
    """The optimizer of a row that is significantly better than every other, if any.

    For each candidate, two-sided paired t-tests (over common seeds) against each of the
    other optimizers, Holm-corrected over those comparisons; the candidate is
    significantly best when every adjusted p-value is below ``alpha`` and every mean
    difference is in its favour.

    Args:
        cells: optimizer -> (seed -> metric), one row of the table.
        higher_is_better: the metric's direction.
        alpha: family-wise error rate of one candidate's comparisons.

    Returns:
        The optimizer's name, or ``None`` (no optimizer is significantly best, a row of
        one optimizer, or fewer than two common seeds).

    Raises:
        ValueError: ``alpha`` outside (0, 1), or non-finite values.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"Invalid alpha: {alpha!r} (must be in (0, 1), e.g. 0.05)")
    if len(cells) < 2:
        return None
    sign = 1.0 if higher_is_better else -1.0
    for candidate, values in cells.items():
        p_values, favoured = [], True
        for other, other_values in cells.items():
            if other == candidate:
                continue
            seeds, a, b = _pairs(values, other_values)
            if len(seeds) < 2:
                return None
            favoured &= bool(sign * float(np.mean(a - b)) > 0)
            p_values.append(_ttest_rel(a, b)[1])
        if favoured and max(holm(p_values)) < alpha:
            return candidate
    return None
