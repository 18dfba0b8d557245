"""NSGD-M against the float64 transcription of its definition (Cutkosky & Mehta 2020) (heavy-tailed noise)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optim import NSGDM, build_optimizer
from optim.clipping import CLIPPING_KINDS

from . import reference_family as ref
from .conftest import NoisyQuadratic
from .test_algorithms import _groups

STEPS = 60

SETTINGS = [
    dict(lr=0.05),  # the 2020 method: no clipping
    dict(lr=0.05, momentum=0.5, clip_level=1.0, weight_decay=1e-2),
    dict(lr=[0.1, 0.02], momentum=[0.9, 0.7], clip_level=2.0, weight_decay=[1e-2, 0.0]),
]


def _run(problem, steps, dtype=torch.float64, **kwargs):
    params = problem.params(dtype)
    groups, scalars = _groups(params, **kwargs)
    opt = NSGDM(groups, **scalars, **({"lr": 1.0} if "lr" not in scalars else {}))
    for k in range(steps):
        problem.set_grads(k, params)
        opt.step()
    return params, opt


@pytest.mark.parametrize("normalize", ["global", "layer_wise"])
@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("dtype, rtol", [(torch.float64, 1e-10), (torch.float32, 2e-4)])
def test_nsgdm_matches_the_text(kernel_path, setting, clipping, normalize, dtype, rtol):
    problem = NoisyQuadratic.make(steps=STEPS, noise_scale=2.0)
    params, opt = _run(problem, STEPS, dtype, clipping=clipping, normalize=normalize, **setting)
    expected = ref.nsgdm(problem.x0, problem.grad, STEPS, clipping=clipping, normalize=normalize, **setting)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().double().numpy(), e, rtol=rtol, atol=rtol)
    assert int(opt.global_state["step"]) == STEPS
    if setting.get("clip_level", math.inf) < math.inf and clipping == "norm":
        assert int(opt.global_state["clipped_steps"]) > 0  # heavy tails: the level is hit


def test_global_step_has_length_lr_and_zero_momentum_gives_zero_step():
    p = torch.nn.Parameter(torch.zeros(3, 4, dtype=torch.float64))
    q = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = NSGDM([{"params": [p], "lr": 0.3}, {"params": [q], "lr": 0.3}], lr=0.3, momentum=0.0)
    p.grad, q.grad = torch.randn(3, 4, dtype=torch.float64) * 100, torch.randn(5, dtype=torch.float64)
    opt.step()
    assert math.isclose(math.sqrt(p.detach().norm() ** 2 + q.detach().norm() ** 2), 0.3, rel_tol=1e-12)
    before = p.detach().clone()
    p.grad.zero_(), q.grad.zero_()
    opt.state[p]["momentum_buffer"].zero_(), opt.state[q]["momentum_buffer"].zero_()
    opt.step()  # m = 0: max(‖m‖, 1e-12) keeps the step finite and zero
    assert torch.equal(p, before)


def test_registry_defaults_and_errors():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer("nsgdm", params)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["clip_level"], group["normalize"]) == (0.1, 0.9, math.inf, "global")
    with pytest.raises(ValueError, match="Invalid normalize: 'per_tensor'"):
        NSGDM(params, lr=0.1, normalize="per_tensor")
    with pytest.raises(ValueError, match="Invalid momentum: 1.0"):
        NSGDM(params, lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="Invalid clip_level"):
        NSGDM(params, lr=0.1, clip_level=0.0)
    with pytest.raises(ValueError, match="Invalid normalize: parameter groups disagree"):
        NSGDM([{"params": params}, {"params": [torch.nn.Parameter(torch.zeros(1))], "normalize": "layer_wise"}], lr=0.1)
