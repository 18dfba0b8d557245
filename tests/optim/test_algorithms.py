"""The optimizers against a float64 transcription of the papers' pseudocode and against torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from optim import ClippedSGD, ClippedSSTM
from optim.clipping import CLIPPING_KINDS

from . import reference
from .conftest import NoisyQuadratic

STEPS = 60

SGD_SETTINGS = [
    dict(lr=0.05, clip_level=1.0),
    dict(lr=0.05, clip_level=0.5, momentum=0.9, weight_decay=1e-2),
    dict(lr=[0.1, 0.02], clip_level=2.0, momentum=[0.5, 0.9], weight_decay=[1e-2, 0.0]),
]
SSTM_SETTINGS = [
    dict(lr=0.5, L=2.0, clip_level=1.0),
    dict(lr=0.5, L=2.0, clip_level=0.3, nu=0.5, max_ratio=0.9),
    dict(lr=0.2, L=1.0, clip_level=0.5, nu=0.0, max_ratio=0.99, weight_decay=[1e-2, 0.0]),
]


def _groups(params, **hparams):
    """One parameter group per tensor; hyperparameters given as lists vary per group."""
    groups = []
    for i, p in enumerate(params):
        group = {"params": [p]}
        for key, value in hparams.items():
            if isinstance(value, list):
                group[key] = value[i]
        groups.append(group)
    scalars = {k: v for k, v in hparams.items() if not isinstance(v, list)}
    return groups, scalars


def _run(opt_cls, problem: NoisyQuadratic, steps: int, dtype=torch.float64, **kwargs):
    params = problem.params(dtype)
    groups, scalars = _groups(params, **kwargs)
    opt = opt_cls(groups, **scalars, **({"lr": 1.0} if "lr" not in scalars else {}))
    for k in range(steps):
        problem.set_grads(k, params)
        opt.step()
    return params, opt


def _sgd_kwargs(setting, clipping, average=False):
    return dict(setting, clipping=clipping, average=average)


@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize("setting", SGD_SETTINGS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_clipped_sgd_matches_reference(kernel_path, quadratic, setting, clipping, dtype, rtol):
    params, opt = _run(ClippedSGD, quadratic, STEPS, dtype, **_sgd_kwargs(setting, clipping, average=True))
    x_ref, avg_ref = reference.clipped_sgd(quadratic.x0, quadratic.grad, STEPS, clipping=clipping, **setting)
    for p, x, e, avg in zip(params, x_ref, opt.evaluation_point(), avg_ref):
        np.testing.assert_allclose(p.detach().double().numpy(), x, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(e.double().numpy(), avg, rtol=rtol, atol=rtol)
    assert opt.global_state["step"].item() == STEPS


@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize("setting", SSTM_SETTINGS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_clipped_sstm_matches_reference(kernel_path, quadratic, setting, clipping, dtype, rtol):
    params, opt = _run(ClippedSSTM, quadratic, STEPS, dtype, clipping=clipping, **setting)
    ref = reference.clipped_sstm(quadratic.x0, quadratic.grad, STEPS, clipping=clipping, **setting)
    for p, y, x_ref, y_ref in zip(params, opt.evaluation_point(), ref["x"], ref["y"]):
        np.testing.assert_allclose(p.detach().double().numpy(), x_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(y.double().numpy(), y_ref, rtol=rtol, atol=rtol)


def test_sstm_clipping_is_active_in_the_reference_tests(quadratic):
    """The settings above must actually clip, or the comparison proves little."""
    _, opt = _run(ClippedSSTM, quadratic, STEPS, **SSTM_SETTINGS[1])
    assert 0.2 < opt.step_stats()["clipped_fraction"].item() <= 1.0
    _, opt = _run(ClippedSGD, quadratic, STEPS, **SGD_SETTINGS[1])
    assert 0.2 < opt.step_stats()["clipped_fraction"].item() <= 1.0


def test_sstm_first_gradient_is_taken_at_x0(quadratic):
    params = quadratic.params()
    x0 = [p.detach().clone() for p in params]
    opt = ClippedSSTM(params, lr=0.5, L=2.0, clip_level=1.0)
    seen = []
    for k in range(2):
        seen.append([p.detach().clone() for p in params])
        quadratic.set_grads(k, params)
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(seen[0], x0))
    assert not all(torch.equal(a, b) for a, b in zip(seen[1], x0))


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 1e-2), (0.5, 5e-3)])
def test_clipped_sgd_equals_clip_grad_norm_plus_torch_sgd(kernel_path, quadratic, momentum, weight_decay):
    ours = quadratic.params(torch.float32)
    theirs = quadratic.params(torch.float32)
    opt = ClippedSGD(ours, lr=0.05, clip_level=0.5, momentum=momentum, weight_decay=weight_decay)
    torch_opt = torch.optim.SGD(theirs, lr=0.05, momentum=momentum, weight_decay=weight_decay, foreach=True)
    for k in range(STEPS):
        quadratic.set_grads(k, ours)
        for p, q in zip(ours, theirs):
            q.grad = p.grad.clone()
        opt.step()
        torch.nn.utils.clip_grad_norm_(theirs, 0.5)
        torch_opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_infinite_clip_level_is_plain_sgd(kernel_path, quadratic):
    ours = quadratic.params()
    theirs = quadratic.params()
    opt = ClippedSGD(ours, lr=0.05, clip_level=float("inf"), momentum=0.9)
    torch_opt = torch.optim.SGD(theirs, lr=0.05, momentum=0.9)
    for k in range(STEPS):
        quadratic.set_grads(k, ours)
        quadratic.set_grads(k, theirs)
        opt.step()
        torch_opt.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-12)
    assert opt.step_stats()["clipped_fraction"].item() == 0.0


def test_infinite_clip_level_is_unclipped_sstm(kernel_path, quadratic):
    params, opt = _run(ClippedSSTM, quadratic, STEPS, lr=0.5, L=2.0, clip_level=float("inf"), max_ratio=0.95)
    # The unclipped method: clip_level so large that clip() is the identity.
    ref = reference.clipped_sstm(quadratic.x0, quadratic.grad, STEPS, lr=0.5, L=2.0, clip_level=1e300, max_ratio=0.95)
    for y, y_ref in zip(opt.evaluation_point(), ref["y"]):
        np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-10, atol=1e-10)
    assert opt.step_stats()["clip_factor"].item() == 1.0


@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize(
    "opt_cls, kwargs",
    [
        (ClippedSGD, dict(lr=0.05, clip_level=0.5, momentum=0.9, weight_decay=1e-2, average=True)),
        (ClippedSGD, dict(lr=0.05, clip_level=0.5)),
        (ClippedSSTM, dict(lr=0.5, L=2.0, clip_level=0.3, nu=0.5, max_ratio=0.9, weight_decay=1e-2)),
    ],
)
def test_foreach_equals_single_tensor(kernel_path, quadratic, opt_cls, kwargs, clipping):
    results = []
    for foreach in (True, False):
        params = quadratic.params(torch.float32)
        opt = opt_cls(params, clipping=clipping, foreach=foreach, **kwargs)
        for k in range(STEPS):
            quadratic.set_grads(k, params)
            opt.step()
        results.append((params, opt.evaluation_point(), opt.step_stats()))
    (p1, e1, s1), (p2, e2, s2) = results
    for a, b in zip(p1 + e1, p2 + e2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for key in s1:
        torch.testing.assert_close(s1[key], s2[key], rtol=1e-6, atol=0)


def test_clip_statistics(quadratic):
    params = quadratic.params()
    opt = ClippedSGD(params, lr=0.05, clip_level=0.5)
    quadratic.set_grads(0, params)
    grads = [p.grad.clone() for p in params]
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    opt.step()
    stats = opt.step_stats()
    torch.testing.assert_close(stats["grad_norm"], norm)
    torch.testing.assert_close(stats["clip_factor"], torch.clamp(0.5 / (norm + 1e-6), max=1.0))
    assert stats["clipped_fraction"].item() == float(norm > 0.5)
    # The step does not modify p.grad (Lightning and loggers may still read it).
    for p, g in zip(params, grads):
        assert torch.equal(p.grad, g)


def test_step_with_closure_returns_the_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = torch.randn(16, 3), torch.randn(16, 1)
    for opt in (
        ClippedSGD(model.parameters(), lr=0.1, clip_level=1.0),
        ClippedSSTM(model.parameters(), lr=0.1, L=1.0, clip_level=1.0),
    ):
        calls = []

        def closure():
            calls.append(1)
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(data[0]), data[1])
            loss.backward()
            return loss

        before = [p.detach().clone() for p in model.parameters()]
        loss = opt.step(closure)
        assert calls == [1] and loss.requires_grad is False or loss.ndim == 0
        assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_params_without_grad_are_left_alone(quadratic):
    params = quadratic.params()
    for opt in (ClippedSGD(params, lr=0.1, clip_level=1.0, momentum=0.9), ClippedSSTM(params, lr=0.1, L=1.0, clip_level=1.0)):
        frozen = params[1].detach().clone()
        quadratic.set_grads(0, params)
        params[1].grad = None
        opt.step()
        assert torch.equal(params[1], frozen)
        assert params[1] not in opt.state
