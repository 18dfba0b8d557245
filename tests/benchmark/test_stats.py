"""benchmark.stats against hand-computed intervals, verdicts and Holm decisions."""

from __future__ import annotations

import math

import pytest

from benchmark.stats import (
    BETTER,
    NO_DIFFERENCE,
    TOO_FEW,
    WORSE,
    holm,
    mean_ci,
    paired_difference,
    significantly_best,
)

# Student-t quantiles, written out (not computed by the code under test).
T_0975_2 = 4.302652729911275  # two-sided 95%, 2 degrees of freedom
T_0975_4 = 2.7764451051977987  # two-sided 95%, 4 degrees of freedom
T_09875_2 = 6.205346816570706  # two-sided 97.5% (p < 0.025), 2 degrees of freedom


def test_mean_ci_three_seeds_by_hand():
    # mean 2, sd 1, n 3: half-width t_{0.975,2} / sqrt(3)
    ci = mean_ci([1.0, 2.0, 3.0])
    half = T_0975_2 * 1.0 / math.sqrt(3)
    assert ci.mean == pytest.approx(2.0)
    assert ci.low == pytest.approx(2.0 - half, rel=1e-9)
    assert ci.high == pytest.approx(2.0 + half, rel=1e-9)
    assert ci.half_width == pytest.approx(2.4841377118, rel=1e-9)
    assert ci.n == 3


def test_mean_ci_five_seeds_by_hand():
    values = [0.40, 0.42, 0.39, 0.45, 0.44]
    mean = sum(values) / 5  # 0.42
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)  # sqrt(0.0026/4)
    ci = mean_ci(values)
    assert ci.mean == pytest.approx(0.42)
    assert ci.half_width == pytest.approx(T_0975_4 * sd / math.sqrt(5), rel=1e-9)


def test_mean_ci_one_seed_and_constant():
    one = mean_ci([5.0])
    assert one.mean == 5.0 and math.isnan(one.low) and math.isnan(one.high) and one.n == 1
    const = mean_ci([2.0, 2.0, 2.0])
    assert (const.low, const.high) == (2.0, 2.0)


@pytest.mark.parametrize("bad", [[], [1.0, math.nan], [math.inf, 1.0]])
def test_mean_ci_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="Invalid values"):
        mean_ci(bad)


def test_mean_ci_rejects_bad_confidence():
    with pytest.raises(ValueError, match="Invalid confidence"):
        mean_ci([1.0, 2.0], confidence=95)


def test_paired_verdict_better_and_worse_by_hand():
    baseline = {0: 1.0, 1: 2.0, 2: 3.0}
    optimizer = {0: 1.5, 1: 2.7, 2: 3.6}  # differences 0.5, 0.7, 0.6: mean 0.6, sd 0.1
    half = T_0975_2 * 0.1 / math.sqrt(3)  # 0.2484...: interval [0.352, 0.848] excludes 0
    higher = paired_difference(optimizer, baseline, higher_is_better=True)
    assert higher.diff.mean == pytest.approx(0.6)
    assert higher.diff.low == pytest.approx(0.6 - half, rel=1e-9)
    assert higher.diff.high == pytest.approx(0.6 + half, rel=1e-9)
    assert higher.verdict == BETTER
    assert higher.seeds == (0, 1, 2)
    # t = 0.6 / (0.1 / sqrt 3) = 10.392; two-sided p = 2 * sf(t, 2) = 1 - t / sqrt(t^2 + 2) for df 2
    t = 0.6 / (0.1 / math.sqrt(3))
    assert higher.p_value == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    # the same numbers for a loss (lower is better) are a worse optimizer
    assert paired_difference(optimizer, baseline, higher_is_better=False).verdict == WORSE


def test_paired_verdict_no_difference_by_hand():
    baseline = {0: 1.0, 1: 1.0, 2: 1.0}
    optimizer = {0: 2.0, 1: 0.5, 2: 1.2}  # differences 1, -0.5, 0.2: mean 0.2333, sd 0.7506
    result = paired_difference(optimizer, baseline, higher_is_better=True)
    diffs = [1.0, -0.5, 0.2]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert result.diff.low == pytest.approx(mean - T_0975_2 * sd / math.sqrt(3), rel=1e-9)
    assert result.diff.low < 0 < result.diff.high
    assert result.verdict == NO_DIFFERENCE


def test_paired_uses_common_seeds_only_and_too_few():
    result = paired_difference({0: 1.0, 1: 2.0, 5: 9.0}, {0: 0.0, 1: 1.5, 7: 0.0}, higher_is_better=True)
    assert result.seeds == (0, 1)
    assert result.diff.mean == pytest.approx(0.75)
    assert paired_difference({0: 1.0}, {0: 0.0}, higher_is_better=True).verdict == TOO_FEW
    with pytest.raises(ValueError, match="Invalid pairing"):
        paired_difference({0: 1.0}, {1: 0.0}, higher_is_better=True)


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, 2*0.02, 1*0.04 = 0.03, 0.04, 0.04 (monotone)
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # a large first product carries forward: 0.02*3 = 0.06 > 0.03*2 = 0.06, 0.5
    assert holm([0.5, 0.02, 0.03]) == pytest.approx([0.5, 0.06, 0.06])


def _diffs_with_t(t: float) -> list[float]:
    """Three paired differences with mean 1 and t statistic ``t`` (sd = sqrt(3) / t)."""
    s = math.sqrt(3) / t
    return [1 - s, 1.0, 1 + s]


def _row(t_vs_b: float, t_vs_c: float) -> dict[str, dict[int, float]]:
    base = {0: 10.0, 1: 11.0, 2: 12.5}
    b = {s: v + 5 for s, v in base.items()}
    a_minus_b, a_minus_c = _diffs_with_t(t_vs_b), _diffs_with_t(t_vs_c)
    a = {s: b[s] + a_minus_b[s] for s in base}
    # c from a, so that a - c has the wanted t (c against b does not decide a's bold).
    c = {s: a[s] - a_minus_c[s] for s in base}
    return {"a": a, "b": b, "c": c}


def test_significantly_best_needs_holm():
    # Holm with two comparisons: the smaller two-sided p must be < 0.025 (t > t_{0.9875,2}
    # = 6.205) and the larger < 0.05 (t > t_{0.975,2} = 4.303).
    assert significantly_best(_row(7.0, 5.0), higher_is_better=True) == "a"
    # both t between 4.303 and 6.205: each p in (0.025, 0.05): uncorrected tests would
    # bold "a", Holm does not
    assert T_0975_2 < 5.0 and 6.0 < T_09875_2
    assert significantly_best(_row(6.0, 5.0), higher_is_better=True) is None
    # one comparison not significant at all
    assert significantly_best(_row(10.0, 3.0), higher_is_better=True) is None


def test_significantly_best_with_one_rival_is_the_paired_verdict():
    row = _row(7.0, 5.0)
    pair = {"a": row["a"], "b": row["b"]}
    assert paired_difference(pair["a"], pair["b"], higher_is_better=True).verdict == BETTER
    assert significantly_best(pair, higher_is_better=True) == "a"


def test_significantly_best_lower_is_better():
    row = _row(7.0, 5.0)
    flipped = {k: {s: -v for s, v in seeds.items()} for k, seeds in row.items()}
    assert significantly_best(flipped, higher_is_better=False) == "a"
    assert significantly_best(flipped, higher_is_better=True) is None


def test_significantly_best_degenerate_rows():
    assert significantly_best({"a": {0: 1.0, 1: 2.0}}, higher_is_better=True) is None
    assert significantly_best({"a": {0: 1.0}, "b": {0: 0.0}}, higher_is_better=True) is None
    # identical runs (a deterministic tie) are not a best
    assert significantly_best({"a": {0: 1.0, 1: 2.0}, "b": {0: 1.0, 1: 2.0}}, higher_is_better=True) is None
    with pytest.raises(ValueError, match="Invalid alpha"):
        significantly_best({"a": {0: 1.0}, "b": {0: 1.0}}, higher_is_better=True, alpha=5)
