"""Validation of the tail estimators on samples whose tail index is known.

The issue's acceptance test: on symmetric α-stable vectors (scipy's levy_stable) with
α ∈ {1.2, 1.5, 1.8, 2.0} in dimension 100, |α̂ − α| <= 0.15, and α̂ ≈ 2 on Gaussian
noise; seeds fixed, seconds of run time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from benchmark.noise import (
    ALPHA_THRESHOLD,
    GaussianNormReference,
    ProbeResult,
    alpha_estimate,
    alpha_estimate_with_ci,
    alpha_from_blocks,
    alpha_from_blocks_with_ci,
    excess_kurtosis,
    heavy_tail_rule,
    hill_estimator,
    max_median_ratio,
    summarize,
)

DIM = 100
N = 1000


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny tensors: on a busy 2-core machine OpenMP contention made a 0.1 s estimate take
    # seconds. One thread is also what makes the timings reproducible.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _stable(alpha: float, size: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(stats.levy_stable.rvs(alpha, 0.0, size=size, random_state=np.random.default_rng(seed)))


def _flattened_simsekli(x: torch.Tensor) -> float:
    """What the published code does: every coordinate a scalar sample, consecutive blocks."""
    flat = x.reshape(-1, 1)
    n = flat.shape[0]
    m = max(i for i in range(1, math.isqrt(n) + 1) if n % i == 0)
    return alpha_estimate(flat, block_size=m, num_partitions=1)


# ------------------------------------------------------------------ α estimator
@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8, 2.0])
@pytest.mark.parametrize(
    "kwargs", [{"num_partitions": 1}, {}, {"center": True}], ids=["published", "averaged", "centred"]
)
def test_alpha_estimate_recovers_stable_index(alpha, kwargs):
    x = _stable(alpha, (N, DIM), seed=123)
    est = alpha_estimate(x, **kwargs)
    assert isinstance(est, float)
    assert abs(est - alpha) <= 0.15, f"α = {alpha}: estimate {est:.3f}"


def test_alpha_estimate_is_two_on_gaussian_noise_of_any_covariance():
    gen = torch.Generator().manual_seed(0)
    iso = torch.randn(N, DIM, generator=gen)
    # Per-coordinate scales over 6 e-folds and a random rotation: a covariance far from
    # isotropic, like gradient noise across layers.
    scales = torch.exp(torch.empty(DIM, dtype=torch.float64).uniform_(-3, 3, generator=gen))
    q, _ = torch.linalg.qr(torch.randn(DIM, DIM, dtype=torch.float64, generator=gen))
    aniso = (torch.randn(N, DIM, dtype=torch.float64, generator=gen) * scales) @ q
    for x in (iso, aniso):
        assert alpha_estimate(x) >= 1.95
        est = alpha_estimate_with_ci(x)
        assert est.alpha >= 1.95 and est.high == 2.0
        assert est.high >= ALPHA_THRESHOLD  # never "heavy" by the rule
    # The flattened per-coordinate variant reads the heterogeneous scales as a heavy tail
    # (the reason this implementation sums whole vectors).
    hetero = torch.randn(200, 1000, dtype=torch.float64, generator=gen) * torch.exp(
        torch.empty(1000, dtype=torch.float64).uniform_(-3, 3, generator=gen)
    )
    assert _flattened_simsekli(hetero) < 1.6
    assert alpha_estimate(hetero) >= 1.95


def test_norm_of_block_sum_scales_like_m_to_one_over_alpha():
    # The identity the estimator rests on, in dimension 100: ‖X_1+…+X_m‖ / m^{1/α} has the
    # law of ‖X‖ for iid-coordinate SαS vectors.
    alpha, m = 1.5, 10
    x = _stable(alpha, (4000, DIM), seed=7).numpy()
    sums = x.reshape(400, m, DIM).sum(1)
    scaled = np.linalg.norm(sums, axis=1) / m ** (1 / alpha)
    single = np.linalg.norm(x[:400], axis=1)
    assert stats.ks_2samp(scaled, single).pvalue > 0.01
    # ... and it is not the sqrt(m) scaling a Gaussian would have.
    assert stats.ks_2samp(np.linalg.norm(sums, axis=1) / math.sqrt(m), single).pvalue < 1e-3


def test_alpha_interval_covers_truth_and_shrinks_with_samples():
    x = _stable(1.5, (500, DIM), seed=11)
    est = alpha_estimate_with_ci(x, num_bootstrap=100)
    assert est.low <= 1.5 <= est.high
    assert est.low <= est.alpha <= est.high
    assert est.block_size == 10 and est.num_samples == 500 and est.confidence == 0.95
    assert set(est.by_block_size) == {2, 5, 20}
    assert all(abs(a - 1.5) < 0.2 for a in est.by_block_size.values())
    small = alpha_estimate_with_ci(x[:60], num_bootstrap=100)
    assert small.high - small.low > est.high - est.low
    # deterministic given the seed
    assert alpha_estimate_with_ci(x, num_bootstrap=100) == est


def test_alpha_on_scalars_and_mean_shift():
    x = _stable(1.5, (20000,), seed=3)
    assert abs(alpha_estimate(x) - 1.5) <= 0.15  # (N,) = N scalar samples
    # A mean added to the noise grows like m in block sums: α̂ is dragged towards 1, which
    # is why the probe must centre each batch on the gradient of the same subset.
    g = torch.randn(N, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert alpha_estimate(g + 0.3) < 1.8
    # Centring on the sample mean, with its exact stable-law correction, removes the bias;
    # the same for a heavy-tailed sample with a mean.
    assert alpha_estimate(g + 0.3, center=True) >= 1.95
    assert alpha_estimate_with_ci(g + 0.3, center=True, num_bootstrap=50).centered
    heavy = _stable(1.5, (N, DIM), seed=8)
    assert abs(alpha_estimate(heavy + 5.0, center=True) - 1.5) <= 0.15


def test_centring_correction_is_invertible():
    # The bisection needs the stable-law gap to be strictly decreasing in α on [1, 8].
    from benchmark.noise.estimators import _centered_log_gap, _theta_to_alpha

    for m in (2, 5, 10, 20):
        for n in (2 * m, 50, 1000, 20000):
            gaps = [_centered_log_gap(a, m, n) for a in np.linspace(1.0, 8.0, 141)]
            assert all(a > b for a, b in zip(gaps, gaps[1:]))
            for alpha in (1.1, 1.5, 1.9):
                assert _theta_to_alpha(_centered_log_gap(alpha, m, n), m, n, True)[0] == pytest.approx(alpha)


def test_alpha_from_streamed_blocks_matches_published_estimator():
    x = _stable(1.2, (200, DIM), seed=5)
    m = 5
    blocks = torch.linalg.vector_norm(x.reshape(40, m, DIM).sum(1), dim=1)
    members = torch.linalg.vector_norm(x, dim=1).reshape(40, m)
    published = alpha_estimate(x, block_size=m, num_partitions=1)
    assert alpha_from_blocks(blocks, members) == pytest.approx(published, rel=1e-12)
    est = alpha_from_blocks_with_ci(blocks, members, num_bootstrap=100)
    assert est.alpha == pytest.approx(published, rel=1e-12)
    assert est.low <= 1.2 <= est.high and est.num_partitions == 1


@pytest.mark.parametrize(
    "samples, kwargs, match",
    [
        (torch.randn(2, 3, 4), {}, "shape"),
        (torch.tensor([[1.0, float("nan")]] * 40), {}, "NaN"),
        (torch.cat([torch.zeros(1, 3), torch.randn(39, 3)]), {}, "zero"),
        (torch.randn(40, 3), {"block_size": 1}, "block_size"),
        (torch.randn(40, 3), {"block_size": 21}, "block_size"),
        (torch.randn(40, 3), {"num_partitions": 0}, "num_partitions"),
    ],
)
def test_alpha_estimate_rejects_invalid_input(samples, kwargs, match):
    with pytest.raises(ValueError, match=match):
        alpha_estimate(samples, **kwargs)


def test_alpha_interval_rejects_invalid_settings():
    x = torch.randn(40, 3)
    with pytest.raises(ValueError, match="confidence"):
        alpha_estimate_with_ci(x, confidence=1.0)
    with pytest.raises(ValueError, match="num_bootstrap"):
        alpha_estimate_with_ci(x, num_bootstrap=5)
    with pytest.raises(ValueError, match="shapes"):
        alpha_from_blocks(torch.ones(3), torch.ones(4, 2))


# ------------------------------------------------------------- Hill, kurtosis, ratio
@pytest.mark.parametrize("index", [1.0, 1.5, 3.0])
def test_hill_recovers_pareto_index(index):
    x = torch.from_numpy(np.random.default_rng(0).pareto(index, 20000) + 1.0)  # P(X > x) = x^-index
    assert abs(hill_estimator(x, k=2000) - index) <= 0.15
    # the default k = floor(sqrt(n)) = 141: unbiased, sd ≈ index / sqrt(141)
    assert abs(hill_estimator(x) - index) <= 4 * index / math.sqrt(141)


def test_hill_on_stable_norms_estimates_alpha_and_rejects_bad_input():
    # The norm of an SαS vector has tail index α, but its tail is Pareto only far out:
    # k = 1 % of the sample (sd ≈ α / sqrt(k) ≈ 0.11; larger k is biased upwards).
    norms = torch.linalg.vector_norm(_stable(1.5, (20000, 10), seed=2), dim=1)
    assert abs(hill_estimator(norms, k=200) - 1.5) <= 0.25
    with pytest.raises(ValueError, match="k"):
        hill_estimator(norms, k=20000)
    with pytest.raises(ValueError, match="> 0"):
        hill_estimator(torch.tensor([1.0, 0.0, 2.0, 3.0]))


def test_kurtosis_and_max_median():
    rng = np.random.default_rng(0)
    assert abs(excess_kurtosis(torch.from_numpy(rng.standard_normal(200_000)))) < 0.05
    assert excess_kurtosis(torch.from_numpy(rng.laplace(size=200_000))) == pytest.approx(3.0, abs=0.15)
    assert max_median_ratio(torch.tensor([1.0, 2.0, 3.0, 10.0])) == pytest.approx(10.0 / 2.5)
    with pytest.raises(ValueError):
        max_median_ratio(torch.tensor([1.0, -1.0]))


# ----------------------------------------------------------------- Gaussian reference
def test_gaussian_reference_matches_simulated_gaussian_norms():
    rng = np.random.default_rng(0)
    dim = 500
    lam = 1.0 / np.sqrt(np.arange(1, dim + 1))  # a decaying covariance spectrum
    ref = GaussianNormReference.from_moments(lam.sum(), (lam**2).sum(), dim)
    assert 1 <= ref.dof <= dim
    sim = np.sqrt((lam * rng.standard_normal((20000, dim)) ** 2).sum(1))
    for q in (0.05, 0.5, 0.95):
        assert ref.ppf(q) == pytest.approx(np.quantile(sim, q), rel=0.03)
    iso = GaussianNormReference.isotropic(trace=float(dim), dim=dim)  # ‖N(0, I)‖ = chi_dim
    assert iso.ppf(0.5) == pytest.approx(stats.chi(dim).ppf(0.5))
    assert GaussianNormReference.from_moments(3.0, None, 10) == GaussianNormReference.isotropic(3.0, 10)
    with pytest.raises(ValueError, match="trace"):
        GaussianNormReference.from_moments(0.0, 1.0, 10)


def test_gaussian_statistics_use_the_same_estimators():
    ref = GaussianNormReference.from_moments(100.0, 400.0, 1000)  # ν = 25
    st = ref.statistics(50, reps=200, seed=0)
    sample = torch.from_numpy(ref.sample((200, 50), seed=0))
    hills = [hill_estimator(row, k=7) for row in sample]
    assert st.k == 7 and st.hill == pytest.approx(float(np.median(hills)), rel=1e-9)
    ratios = [max_median_ratio(row) for row in sample]
    assert st.max_median == pytest.approx(float(np.median(ratios)), rel=1e-9)
    assert st.max_median_q95 > st.max_median > 1.0


# --------------------------------------------------------------- summary and the rule
def test_heavy_tail_rule():
    assert heavy_tail_rule(1.7, 5.0, 1.4)
    assert not heavy_tail_rule(1.95, 5.0, 1.4)  # interval reaches Gaussian territory
    assert not heavy_tail_rule(1.7, 1.2, 1.4)  # tail not visible in the norms
    assert not heavy_tail_rule(None, 5.0, 1.4)


def test_summary_centres_noise_with_a_mean():
    # A full gradient that misses the batches' mean (BatchNorm coupling): detected by the
    # mean-shift ratio, and α is then estimated on centred sketches.
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(50, 2000, dtype=torch.float64, generator=gen)
    mu = torch.randn(2000, dtype=torch.float64, generator=gen)
    shifted = noise + mu / mu.norm() * 0.14 * noise.norm(dim=1).mean()  # ‖μ‖² ≈ 2 % of tr Σ
    plain = alpha_estimate(ProbeResult.from_noise(shifted).sketches)
    s = summarize(ProbeResult.from_noise(shifted))
    assert plain < 1.95  # biased towards heavy tails
    assert s.mean_shift_ratio > 1.5 and s.alpha.centered and s.alpha.alpha >= 1.97 and not s.heavy_tailed
    assert not summarize(ProbeResult.from_noise(noise)).alpha.centered


def test_summary_separates_gaussian_from_heavy_tailed_noise():
    gen = torch.Generator().manual_seed(0)
    dim = 2000
    eigen = 1.0 / torch.arange(1, dim + 1, dtype=torch.float64)  # covariance spectrum 1/i
    gauss = torch.randn(50, dim, dtype=torch.float64, generator=gen) * eigen.sqrt()
    heavy = _stable(1.2, (50, dim), seed=4)
    g, h = summarize(ProbeResult.from_noise(gauss)), summarize(ProbeResult.from_noise(heavy))
    assert not g.heavy_tailed and g.alpha.high == 2.0 and g.alpha_source == "sketch"
    assert h.heavy_tailed and h.alpha.high < ALPHA_THRESHOLD
    assert h.max_median > 3 * h.gaussian_stats.max_median_q95
    assert abs(g.mean_shift_ratio - 1.0) < 0.5 and g.sketch_distortion < 0.1
    # the effective rank (tr Σ)² / tr Σ² ≈ 40.7, recovered from pair differences (99 pairs
    # at K = 200: relative sd ≈ 0.15)
    more = torch.randn(200, dim, dtype=torch.float64, generator=gen) * eigen.sqrt()
    dof = summarize(ProbeResult.from_noise(more)).gaussian.dof
    assert dof == pytest.approx(float(eigen.sum() ** 2 / (eigen**2).sum()), rel=0.3)
    no_sketch = summarize(ProbeResult.from_noise(heavy, sketch_dim=0))
    assert no_sketch.alpha_source == "blocks"
    assert no_sketch.alpha.alpha == pytest.approx(no_sketch.alpha_blocks, rel=1e-12)
    row = g.metrics()
    assert {"noise/alpha", "noise/alpha_low", "noise/alpha_high", "noise/hill", "noise/kurtosis",
            "noise/max_median", "noise/time_s"} <= set(row)
