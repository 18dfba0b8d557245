"""Accumulators under bf16 parameters: x̄, y and z in float32, on every code path.

With bf16 parameters a bf16 average stalls: once (xᵏ - x̄)/(k+1) is below half an ulp of
x̄ (2⁻⁹ near 1) the update rounds to nothing. The optimizers keep x̄ (and clipped-SSTM's y,
z) in float32; the oracle is a float64 transcription of the paper's pseudocode evaluated on the
same bf16 iterates.
"""

from __future__ import annotations

import io

import pytest
import torch

from optim import ClippedSGD, ClippedSSTM, EvaluationPointSwap, evaluation_point

BF16 = torch.bfloat16
STEPS = 400
PATHS = [dict(foreach=True), dict(foreach=False), dict(foreach=True, device_path=True)]


def _grad(k: int, x: torch.Tensor) -> torch.Tensor:
    """A noisy quadratic around 1 (x⁰ = 1 + small), in float64: ∇ = (x - c) + ξ_k."""
    gen = torch.Generator().manual_seed(k)
    c = torch.linspace(0.9, 1.1, x.numel(), dtype=torch.float64)
    return (x.double() - c) + 0.5 * torch.randn(x.numel(), generator=gen, dtype=torch.float64)


def _x0() -> torch.Tensor:
    return 1.0 + 0.01 * torch.arange(16, dtype=torch.float64)


def _sgd_run(steps, **kwargs):
    """ClippedSGD on bf16; returns (optimizer, the float64 mean of the iterates it took)."""
    x = torch.nn.Parameter(_x0().to(BF16))
    opt = ClippedSGD([x], lr=0.02, clip_level=2.0, average=True, **kwargs)
    total = torch.zeros(16, dtype=torch.float64)
    for k in range(steps):
        total += x.detach().double()  # x̄ᴺ = (1/N) Σ_{k<N} xᵏ
        x.grad = _grad(k, x.detach()).to(BF16)
        opt.step()
    return opt, total / steps


@pytest.mark.parametrize("path", PATHS, ids=["host-foreach", "host-single", "device-foreach"])
def test_bf16_average_tracks_the_float64_mean(path):
    opt, mean = _sgd_run(STEPS, **path)
    (average,) = opt.evaluation_point()
    assert average.dtype == torch.float32
    torch.testing.assert_close(average.double(), mean, rtol=0, atol=2e-5)
    # The same running mean kept in bf16 (what the optimizer did before): stalled, far off.
    naive = _x0().to(BF16)
    x = torch.nn.Parameter(_x0().to(BF16))
    plain = ClippedSGD([x], lr=0.02, clip_level=2.0)
    for k in range(STEPS):
        naive.lerp_(x.detach(), torch.tensor(1.0 / (k + 1), dtype=BF16))
        x.grad = _grad(k, x.detach()).to(BF16)
        plain.step()
    assert (naive.double() - mean).abs().max() > 50 * 2e-5


def test_bf16_average_on_the_fused_path(interpreted_fused):
    opt, mean = _sgd_run(60, fused=True)
    (average,) = opt.evaluation_point()
    assert average.dtype == torch.float32
    torch.testing.assert_close(average.double(), mean, rtol=0, atol=2e-5)


def _noise(k: int) -> torch.Tensor:
    """A gradient that does not depend on x (bf16 values): y and z then follow one exact
    float64 trajectory, and only the precision they are kept in is tested."""
    gen = torch.Generator().manual_seed(k)
    return (0.1 + 0.5 * torch.randn(16, generator=gen, dtype=torch.float64)).to(BF16)


def _sstm_reference(x0, steps, *, lr, L, clip_level):
    """Algorithm 1 in float64 (ν = 1, no ratio cap) on the gradients of :func:`_noise`."""
    a = 1.0 / lr
    y, z, A = x0.clone(), x0.clone(), 0.0
    for k in range(steps):
        alpha = (k + 2) / (2 * a * L)
        A_next = A + alpha
        g = _noise(k).double()
        factor = min(1.0, (clip_level / alpha) / (float(g.norm()) + 1e-6))
        z = z - alpha * factor * g
        y = (A * y + alpha * z) / A_next
        A = A_next
    alpha = (steps + 2) / (2 * a * L)  # where the next gradient is taken: x^{N+1}
    return y, z, (A * y + alpha * z) / (A + alpha)


@pytest.mark.parametrize("path", PATHS + ["fused"], ids=["host-foreach", "host-single", "device-foreach", "fused"])
def test_bf16_sstm_keeps_y_and_z_in_float32(request, path):
    if path == "fused":
        request.getfixturevalue("interpreted_fused")
        path = dict(fused=True)
    steps = 60
    x0 = _x0().to(BF16)
    x = torch.nn.Parameter(x0.clone())
    opt = ClippedSSTM([x], lr=0.05, L=1.0, clip_level=0.5, **path)
    for k in range(steps):
        x.grad = _noise(k)
        opt.step()
    y_ref, z_ref, x_ref = _sstm_reference(x0.double(), steps, lr=0.05, L=1.0, clip_level=0.5)
    state = opt.state[x]
    assert state["y"].dtype == state["z"].dtype == torch.float32 and x.dtype == BF16
    # float32 rounding only: y and z are near 1, where a bf16 ulp is 2⁻⁷.
    torch.testing.assert_close(state["y"].double(), y_ref, rtol=0, atol=2e-5)
    torch.testing.assert_close(state["z"].double(), z_ref, rtol=0, atol=2e-5)
    # one bf16 rounding (to nearest: half an ulp; the Triton interpreter truncates: one ulp)
    torch.testing.assert_close(x.double(), x_ref, rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda p: ClippedSGD(p, lr=0.02, clip_level=2.0, momentum=0.9, average=True),
    lambda p: ClippedSSTM(p, lr=0.05, L=1.0, clip_level=0.5),
], ids=["clipped_sgd", "clipped_sstm"])  # fmt: skip
def test_bf16_accumulators_survive_a_checkpoint_and_the_swap(make):
    def train(opt, x, ks):
        for k in ks:
            x.grad = _grad(k, x.detach()).to(BF16)
            opt.step()

    straight = torch.nn.Parameter(_x0().to(BF16))
    opt = make([straight])
    train(opt, straight, range(40))

    first = torch.nn.Parameter(_x0().to(BF16))
    opt1 = make([first])
    train(opt1, first, range(25))
    buffer = io.BytesIO()
    torch.save({"x": first.detach(), "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = torch.nn.Parameter(checkpoint["x"].clone())
    opt2 = make([resumed])
    opt2.load_state_dict(checkpoint["optimizer"])
    assert all(v.dtype == torch.float32 for k, v in opt2.state[resumed].items() if k in ("average", "y", "z"))
    train(opt2, resumed, range(25, 40))
    assert torch.equal(straight, resumed)
    assert all(torch.equal(a, b) for a, b in zip(evaluation_point(opt), evaluation_point(opt2)))

    live = straight.detach().clone()
    (point,) = evaluation_point(opt)
    with EvaluationPointSwap([opt]):
        assert straight.dtype == BF16 and torch.equal(straight, point.to(BF16))
    assert torch.equal(straight, live)
