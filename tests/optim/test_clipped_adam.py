"""Clipped Adam: the text's transcription, clip_grad_norm_ + torch.optim.AdamW, λ = ∞ = AdamW."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optim import ClippedAdam, build_optimizer
from optim.clipping import CLIPPING_KINDS

from . import reference_family as ref
from .conftest import NoisyQuadratic
from .test_algorithms import _groups

STEPS = 60


def _run(problem, steps, dtype=torch.float64, **kwargs):
    params = problem.params(dtype)
    groups, scalars = _groups(params, **kwargs)
    opt = ClippedAdam(groups, **scalars)
    for k in range(steps):
        problem.set_grads(k, params)
        opt.step()
    return params, opt


@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize(
    "setting",
    [dict(lr=0.05, clip_level=1.0), dict(lr=[0.1, 0.02], clip_level=0.5, weight_decay=[1e-2, 0.0], eps=1e-6)],
)
def test_clipped_adam_matches_the_text(kernel_path, setting, clipping):
    problem = NoisyQuadratic.make(steps=STEPS, noise_scale=2.0)
    params, opt = _run(problem, STEPS, clipping=clipping, **setting)
    expected = ref.clipped_adamw(problem.x0, problem.grad, STEPS, clipping=clipping, **setting)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-10, atol=1e-12)
    assert int(opt.global_state["clipped_steps"]) > 0


def _oracle(problem, steps, dtype, lrs, clip_level, weight_decay):
    params = problem.params(dtype)
    opt = torch.optim.AdamW([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], weight_decay=weight_decay)
    for k in range(steps):
        problem.set_grads(k, params)
        if clip_level < math.inf:
            torch.nn.utils.clip_grad_norm_(params, clip_level)
        opt.step()
    return params


@pytest.mark.parametrize("clip_level", [0.5, math.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_clip_grad_norm_then_adamw(kernel_path, clip_level, dtype):
    problem = NoisyQuadratic.make(steps=STEPS, noise_scale=2.0)
    lrs = [0.1, 0.02]
    params = problem.params(dtype)
    opt = ClippedAdam([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], clip_level=clip_level)
    for k in range(STEPS):
        problem.set_grads(k, params)
        opt.step()
    expected = _oracle(problem, STEPS, dtype, lrs, clip_level, 1e-2)
    for p, e in zip(params, expected):
        if kernel_path == "host":  # CPU: torch's own AdamW kernel on the clipped gradient
            assert torch.equal(p, e)
        else:
            # float32: 60 steps of m/√v amplify the rounding of a different op order
            tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(p, e, **tol)


def test_registry_entry_and_state_keys():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer("clipped_adam", params)
    g = opt.param_groups[0]
    assert (g["lr"], g["clip_level"], g["betas"], g["eps"], g["weight_decay"]) == (1e-3, 1.0, (0.9, 0.999), 1e-8, 1e-2)
    params[0].grad = torch.ones(2)
    opt.step()
    assert set(opt.state[params[0]]) == {"step", "exp_avg", "exp_avg_sq"}  # torch's AdamW keys
    with pytest.raises(ValueError, match=r"Invalid betas\[1\]: 1.0"):
        ClippedAdam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Invalid betas"):
        ClippedAdam(params, betas=0.9)
    with pytest.raises(ValueError, match="Invalid clip_level: parameter groups disagree"):
        ClippedAdam([{"params": params}, {"params": [torch.nn.Parameter(torch.zeros(1))], "clip_level": 2.0}])
