"""The convex suite's building blocks: vectorised optimizers, noise laws, problems, theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from benchmark.convex.experiment import Experiment
from benchmark.convex.logistic import LogisticProblem
from benchmark.convex.methods import METHODS
from benchmark.convex.noise import NoiseModel
from benchmark.convex.per_run import PerRunClippedSGD, PerRunClippedSSTM
from benchmark.convex.quadratic import QuadraticProblem
from benchmark.convex.report import fit_slope
from benchmark.convex.runner import ConvexProblemRun, ConvexRunner, Trajectory, checkpoints, quantiles
from benchmark.convex.theory import TheoryConstants
from optim import ClippedSGD, ClippedSSTM, evaluation_point

INF = math.inf

# -- vectorised runs == individual runs ------------------------------------------------

CASES = [
    ("clipped-SGD, averaged", PerRunClippedSGD, ClippedSGD, dict(lr=0.1, clip_level=1.0, average=True)),
    ("SGD (clip_level=inf), averaged", PerRunClippedSGD, ClippedSGD, dict(lr=0.05, clip_level=INF, average=True)),
    ("clipped-SGD, momentum + wd", PerRunClippedSGD, ClippedSGD, dict(lr=0.1, clip_level=1.0, momentum=0.9, weight_decay=0.01)),
    ("clipped-SSTM", PerRunClippedSSTM, ClippedSSTM, dict(lr=0.05, L=2.0, clip_level=0.3)),
    ("SSTM (B=inf)", PerRunClippedSSTM, ClippedSSTM, dict(lr=0.05, L=2.0, clip_level=INF)),
    ("clipped-SSTM, ratio cap + wd", PerRunClippedSSTM, ClippedSSTM, dict(lr=0.05, L=2.0, clip_level=0.3, max_ratio=0.9, weight_decay=0.1)),
]


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("name,per_run_cls,cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_per_run_equals_separate_optimizers(name, per_run_cls, cls, kwargs, foreach):
    """Row r of the vectorised optimizer follows run r of a plain optimizer, skips included."""
    runs, dim, steps = 4, 7, 60
    gen = torch.Generator().manual_seed(1)
    scale = torch.logspace(-1, 1, steps, dtype=torch.float64)[:, None, None]  # from never to always clipped
    grads = torch.randn(steps, runs, dim, generator=gen, dtype=torch.float64) * scale
    grads[10, 2, 3] = INF  # run 2 alone must skip step 10
    grads[20, 0, 0] = math.nan
    x0 = torch.randn(runs, dim, generator=gen, dtype=torch.float64)

    batched = torch.nn.Parameter(x0.clone())
    vectorised = per_run_cls([batched], **kwargs)
    singles = [torch.nn.Parameter(x0[r].clone()) for r in range(runs)]
    plain = [cls([p], foreach=foreach, **kwargs) for p in singles]
    for t in range(steps):
        batched.grad = grads[t].clone()
        vectorised.step()
        for r in range(runs):
            singles[r].grad = grads[t, r].clone()
            plain[r].step()

    for r in range(runs):
        torch.testing.assert_close(batched.detach()[r], singles[r].detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(evaluation_point(vectorised)[0][r], evaluation_point(plain[r])[0], rtol=1e-12, atol=1e-14)
        for key, value in plain[r].global_state.items():
            torch.testing.assert_close(vectorised.global_state[key][r, 0], value, rtol=1e-12, atol=1e-14, msg=key)
    assert vectorised.global_state["skipped_steps"].view(-1).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert vectorised.num_skipped_steps == 2
    if kwargs["clip_level"] < INF:
        assert 0 < vectorised.global_state["clipped_steps"].sum() < runs * steps


def test_per_run_rejects_what_it_cannot_do():
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="foreach"):
        PerRunClippedSGD([p], lr=0.1, clip_level=1.0, foreach=True)
    with pytest.raises(ValueError, match="clipping"):
        PerRunClippedSGD([p], lr=0.1, clip_level=1.0, clipping="layer_wise")
    with pytest.raises(ValueError, match="runs"):
        PerRunClippedSSTM([torch.nn.Parameter(torch.zeros(3))], lr=0.1, L=1.0, clip_level=1.0)
    with pytest.raises(ValueError, match="runs"):
        PerRunClippedSGD([p, torch.nn.Parameter(torch.zeros(4, 2))], lr=0.1, clip_level=1.0)


def test_per_run_raise_policy_names_the_run():
    p = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    opt = PerRunClippedSGD([p], lr=0.1, clip_level=1.0, nonfinite="raise")
    p.grad = torch.tensor([[1.0, 0.0], [INF, 0.0], [0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(FloatingPointError, match=r"run\(s\) \[1\]"):
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(3, 2, dtype=torch.float64))


def test_method_build_runs_the_plain_optimizer_per_row():
    """With a noiseless oracle, every row of Method.build's optimizer equals one plain run."""
    problem = QuadraticProblem(6, NoiseModel("gaussian", sigma=0.0))
    param = torch.nn.Parameter(problem.start(5))
    opt = METHODS["clipped_sstm"].build(param, {"a": 2.0, "B": 0.05}, problem)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    for _ in range(50):
        param.grad = problem.gradient(param.detach(), 1, gen, rng)
        opt.step()
    y = evaluation_point(opt)[0]
    assert torch.equal(y, y[:1].expand_as(y))  # deterministic oracle: all runs identical
    plain_param = torch.nn.Parameter(problem.x0.clone())
    plain = ClippedSSTM([plain_param], lr=0.5, L=problem.L, clip_level=0.05)
    for _ in range(50):
        plain_param.grad = problem.hessian_times((plain_param.detach() - problem.x_star)[None])[0]
        plain.step()
    torch.testing.assert_close(y[0], evaluation_point(plain)[0], rtol=1e-12, atol=1e-15)


# -- noise laws ---------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gaussian", "student_t", "pareto", "burr"])
def test_noise_has_mean_zero_and_the_prescribed_variance(family):
    # Tail index 8: a finite fourth moment, so the Monte Carlo mean of ‖ξ‖² converges.
    noise = NoiseModel(family, None if family == "gaussian" else 8.0, sigma=2.0)
    gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
    xi = noise.sample(400_000, 5, gen, rng, scale=0.5)
    assert xi.shape == (400_000, 5) and xi.dtype == torch.float64
    second = xi.square().sum(1)
    assert abs(second.mean().item() - 1.0) < 0.02  # (σ·scale)² = 1
    assert xi.mean(0).abs().max().item() < 0.01
    cov = xi.T @ xi / len(xi)  # isotropic: σ²scale²/d on the diagonal
    torch.testing.assert_close(cov, torch.eye(5, dtype=torch.float64) / 5, atol=0.01, rtol=0)


@pytest.mark.parametrize("family", ["student_t", "pareto", "burr"])
def test_noise_norm_has_the_stated_tail_index(family):
    noise = NoiseModel(family, 2.5)
    gen, rng = torch.Generator().manual_seed(1), np.random.default_rng(1)
    norms = noise.sample(400_000, 10, gen, rng).norm(dim=1).sort().values
    top = norms[-2000:]  # Hill estimator on the top 0.5%
    hill = 1.0 / torch.log(top / norms[-2001]).mean().item()
    assert 2.2 < hill < 2.8


@pytest.mark.parametrize("text", ["student_t:2", "pareto:1.5", "gaussian:3", "cauchy", "student_t:x"])
def test_noise_rejects_infinite_variance_and_typos(text):
    with pytest.raises(ValueError):
        NoiseModel.parse(text)


def test_noise_parse_round_trip():
    assert NoiseModel.parse("student_t").tail == 2.5
    assert NoiseModel.parse("pareto:2.2").name == "pareto:2.2"
    assert not NoiseModel.parse("gaussian").heavy_tailed


# -- problems and their optimum -----------------------------------------------------


@pytest.mark.parametrize("rotate", [False, True])
def test_quadratic_optimum_gap_and_gradient(rotate):
    problem = QuadraticProblem(8, NoiseModel("gaussian", sigma=0.0), condition=100.0, R0=1.5, rotate=rotate)
    assert problem.f_star == 0.0 and problem.R0 == pytest.approx(1.5)
    assert problem.gap(problem.x_star[None]).item() == 0.0
    # Against an explicit dense H and autograd.
    Q = problem.basis if rotate else torch.eye(8, dtype=torch.float64)
    H = Q @ torch.diag(problem.eigenvalues) @ Q.T
    assert torch.linalg.eigvalsh(H).max().item() == pytest.approx(problem.L)
    x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    e = x - problem.x_star
    f = 0.5 * torch.einsum("ri,ij,rj->r", e, H, e)
    f.sum().backward()
    torch.testing.assert_close(problem.gap(x.detach()), f.detach())
    g = problem.gradient(x.detach(), 1, torch.Generator(), np.random.default_rng())
    torch.testing.assert_close(g, x.grad)
    assert problem.gap(torch.full((1, 8), math.nan, dtype=torch.float64)).item() == INF


def test_logistic_optimum_matches_an_independent_solver():
    problem = LogisticProblem()
    assert (problem.n, problem.dim) == (390, 6)
    assert problem.full_gradient(problem.x_star[None]).norm().item() < 1e-10
    A, y = problem.A64.numpy(), problem.y64.numpy()

    def f(w):
        z = A @ w
        return np.mean(np.logaddexp(0, z) - y * z)

    def g(w):
        return A.T @ (1 / (1 + np.exp(-A @ w)) - y) / len(y)

    ref = minimize(f, np.zeros(6), jac=g, method="BFGS", options={"gtol": 1e-11})
    assert problem.f_star == pytest.approx(ref.fun, abs=1e-12)
    assert problem.f_star <= ref.fun + 1e-15
    np.testing.assert_allclose(problem.x_star.numpy(), ref.x, atol=1e-5)
    # L bounds the Hessian everywhere (checked at random points); σ² bounds the variance.
    gen = torch.Generator().manual_seed(0)
    for x in torch.randn(5, 6, generator=gen, dtype=torch.float64) * 3:
        p = torch.sigmoid(problem.A64 @ x)
        hess = (problem.A64.T * (p * (1 - p))) @ problem.A64 / problem.n
        assert torch.linalg.eigvalsh(hess).max().item() <= problem.L
        per_sample = problem.A64 * (p - problem.y64)[:, None]
        variance = (per_sample - per_sample.mean(0)).square().sum(1).mean().item()
        assert variance <= problem.sigma2


def test_logistic_minibatch_gradient_is_unbiased():
    problem = LogisticProblem()
    x = (problem.x_star + 0.3)[None].expand(20_000, 6).contiguous()
    g = problem.gradient(x, 4, torch.Generator().manual_seed(0), np.random.default_rng(0))
    full = problem.full_gradient(x[:1])[0]
    assert (g.mean(0) - full).abs().max().item() < 4 * math.sqrt(problem.sigma2 / 4 / 20_000)
    assert problem.gradient(x[:3], 10_000, torch.Generator(), np.random.default_rng()).shape == (3, 6)  # capped, not refused


# -- theory formulas ---------------------------------------------------------------


def test_theory_formulas_and_batches():
    problem = QuadraticProblem(10, NoiseModel("gaussian", sigma=3.0), L=2.0, R0=0.5)
    c = TheoryConstants(beta=0.05)
    N = 1000
    ln = math.log(4 * N / 0.05)
    sgd = c.sgd(problem, N)
    assert sgd["lr"] == pytest.approx(1 / (80 * 2.0 * ln)) and sgd["clip_level"] == pytest.approx(2 * 2.0 * 0.5)
    assert c.sgd(problem, N, clipped=False)["clip_level"] == INF
    m = c.sgd_batches(problem, N)
    assert m.shape == (N,) and (m == math.ceil(9 * N / (0.25 * 4 * ln))).all()
    sstm = c.sstm(problem, N)
    assert sstm["a"] == pytest.approx(ln**2) and sstm["B"] == pytest.approx(0.5 / ln)
    mk = c.sstm_batches(problem, N, sstm["a"])
    alpha = (np.arange(N) + 2) / (2 * sstm["a"] * 2.0)  # α_{k+1} = (k+2)/(2aL), ν = 1
    np.testing.assert_array_equal(mk, np.maximum(1, np.ceil(9 * alpha**2 * N * ln / 0.25)))
    with pytest.raises(ValueError):
        TheoryConstants(beta=1.5)


# -- runner and report helpers -------------------------------------------------------


def test_checkpoints_and_quantiles():
    points = checkpoints(10_000)
    assert points[0] == 1 and points[-1] == 10_000 and {10, 100, 1000} <= set(points)
    values = torch.tensor([3.0, 1.0, INF, 2.0])
    q = quantiles(values, (0.25, 0.5, 0.75, 1.0))
    assert q.tolist() == [1.0, 2.0, 3.0, INF]


def test_fit_slope_recovers_a_power_law():
    n = checkpoints(10_000)
    slope, lo, hi = fit_slope(n, 5.0 / np.array(n, dtype=float) ** 2)
    assert slope == pytest.approx(-2.0) and (lo, hi) == (100, 10_000)
    assert math.isnan(fit_slope(n, np.full(len(n), INF))[0])


def test_runner_deterministic_oracle_gives_deterministic_runs():
    experiment = Experiment("quadratic", noise="gaussian", batch=1, iters=200, dim=10, sigma=0.0)
    trajectory = ConvexRunner().run(ConvexProblemRun(experiment, "clipped_sgd", {"lr": 0.5, "clip_level": 0.1}, 20, 0))
    assert trajectory.output.shape == (len(trajectory.checkpoints), len(trajectory.probs))
    assert np.all(trajectory.output[:, 0] == trajectory.output[:, -1])  # σ = 0: every run identical
    assert trajectory.final(0.5) < trajectory.at(1, 0.5)
    assert trajectory.oracle_calls == 200


@pytest.mark.parametrize("problem,noise", [("quadratic", "student_t:2.5"), ("logistic", "data")])
def test_a_group_in_lockstep_equals_separate_runs(problem, noise):
    """A sweep's grid shares each step's draw; that must change nothing for any setting."""
    experiment = Experiment(problem, noise=noise, batch=2, iters=60, dim=6)
    grid = [{"lr": 0.05, "clip_level": 0.5}, {"lr": 0.2, "clip_level": 0.1}, {"lr": 0.2, "clip_level": INF}]
    tasks = [ConvexProblemRun(experiment, "clipped_sgd", hp, 16, 3, stream="tune") for hp in grid]
    together = ConvexRunner().run_group(tasks)
    for task, group_result in zip(tasks, together):
        alone = ConvexRunner().run(task)
        np.testing.assert_array_equal(group_result.output, alone.output)
        np.testing.assert_array_equal(group_result.last, alone.last)
    assert not np.array_equal(together[0].output, together[1].output)
    with pytest.raises(ValueError, match="only in their hyperparameters"):
        ConvexRunner().run_group([tasks[0], ConvexProblemRun(experiment, "clipped_sgd", grid[0], 16, 4)])


def test_sweep_selects_the_smallest_q99_and_flags_grid_edges():
    from benchmark.convex.tuning import Sweep

    experiment = Experiment("quadratic", noise="gaussian", batch=1, iters=10, dim=4)
    probs = (0.5, 0.99)

    def fake(method, hparams, median, q99):
        table = np.array([[median, q99]])
        return Trajectory(experiment.name, method, "sweep", hparams, 10, 0, [10], table, table, 0.1, 10, probs=probs)

    runs = [
        fake("sstm", {"a": 1.0, "B": INF}, 1.0, 1.5),
        fake("sstm", {"a": 10.0, "B": INF}, 2.0, 1.2),
        fake("sstm", {"a": 100.0, "B": INF}, 0.5, 3.0),
        fake("sgd", {"lr": 0.1, "clip_level": INF}, 1.0, 2.0),
        fake("sgd", {"lr": 1.0, "clip_level": INF}, 1.0, 1.0),
        fake("clipped_sstm", {"a": 1.0, "B": 0.1}, 1.0, 1.0),
        fake("clipped_sstm", {"a": 10.0, "B": 0.1}, 1.0, 2.0),
    ]
    chosen = Sweep(experiment, ["sgd", "sstm", "clipped_sstm"], runs=10, seed=0).select(runs)
    assert chosen["sstm"].best == {"a": 10.0, "B": INF} and chosen["sstm"].at_edge == []
    assert chosen["sgd"].best["lr"] == 1.0 and chosen["sgd"].at_edge == ["lr"]
    assert chosen["clipped_sstm"].best["a"] == 1.0 and chosen["clipped_sstm"].at_edge == []  # a = 1 is a bound
    by_median = Sweep(experiment, ["sstm"], runs=10, seed=0, criterion="median").select(runs)
    assert by_median["sstm"].best["a"] == 100.0
