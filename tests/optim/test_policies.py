"""AutoClip, ZClip and AGC against their definitions, in front of torch's SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optim import AGC, AutoClip, ClipPolicyOptimizer, MuonAdamW, ZClip, build_optimizer

from . import reference_family as ref
from .conftest import NoisyQuadratic

STEPS = 60


def _run_sgd(problem, policy, steps=STEPS, lr=0.05, momentum=0.9, skip=()):
    params = problem.params()
    opt = ClipPolicyOptimizer(torch.optim.SGD([{"params": [p]} for p in params], lr=lr, momentum=momentum), policy)
    norms, thresholds = [], []
    for k in range(steps):
        problem.set_grads(k, params)
        if k in skip:
            params[0].grad[0, 0] = float("nan")
        opt.step()
        stats = opt.step_stats()
        if k not in skip:
            norms.append(float(stats["grad_norm"]))
            thresholds.append(float(stats["clip_threshold"]))
    return params, opt, norms, thresholds


@pytest.mark.parametrize("window", [None, 7])
def test_autoclip_is_the_percentile_of_the_whole_history(kernel_path, window):
    problem = NoisyQuadratic.make(steps=STEPS, noise_scale=3.0)
    params, opt, norms, thresholds = _run_sgd(problem, AutoClip(percentile=10, history=window))
    np.testing.assert_allclose(thresholds, ref.autoclip_thresholds(norms, 10, window), rtol=1e-12)
    expected, ref_norms = ref.sgd_with_policy(
        problem.x0, problem.grad, STEPS, lr=0.05, momentum=0.9,
        threshold=lambda h: ref.autoclip_thresholds(h, 10, window)[-1],
    )  # fmt: skip
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-10)
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-10, atol=1e-12)
    assert 0 < int(opt.global_state["clipped_steps"]) < STEPS


def test_autoclip_history_grows_past_its_first_buffer():
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = build_optimizer("sgd_autoclip", [p], lr=1e-3, momentum=0.0, percentile=37.5)
    rng = np.random.default_rng(0)
    norms = np.abs(rng.standard_t(2.5, size=1100)) + 1e-3
    for n in norms:
        p.grad = torch.tensor([n], dtype=torch.float64)
        opt.step()
    assert opt.policy.state["history"].numel() == 2048
    assert float(opt.step_stats()["clip_threshold"]) == pytest.approx(np.percentile(norms, 37.5), rel=1e-12)


@pytest.mark.parametrize("max_norm", [None, 4.0])
def test_zclip_warmup_and_ema_order(kernel_path, max_norm):
    problem = NoisyQuadratic.make(steps=STEPS, noise_scale=3.0)
    policy = ZClip(warmup_steps=5, z_threshold=1.0, ema_alpha=0.9, max_norm=max_norm)
    params, opt, norms, thresholds = _run_sgd(problem, policy)
    expected_thresholds = ref.zclip_thresholds(norms, warmup=5, z_t=1.0, a=0.9, max_norm=max_norm)
    np.testing.assert_allclose(thresholds, expected_thresholds, rtol=1e-12)
    assert sum(t < math.inf for t in expected_thresholds[5:]) > 3  # spikes were clipped
    expected, _ = ref.sgd_with_policy(
        problem.x0, problem.grad, STEPS, lr=0.05, momentum=0.9,
        threshold=lambda h: ref.zclip_thresholds(h, warmup=5, z_t=1.0, a=0.9, max_norm=max_norm)[-1],
    )  # fmt: skip
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-10, atol=1e-12)


def test_zclip_warmup_counts_applied_steps_only(kernel_path):
    """Skipped steps inside the warm-up do not count: it ends after W recorded norms."""
    problem = NoisyQuadratic.make(steps=30, noise_scale=3.0)
    skip = (1, 3, 4)
    _, opt, norms, thresholds = _run_sgd(problem, ZClip(warmup_steps=5, z_threshold=0.5), steps=30, skip=skip)
    np.testing.assert_allclose(thresholds, ref.zclip_thresholds(norms, warmup=5, z_t=0.5), rtol=1e-12)
    assert int(opt.global_state["skipped_steps"]) == 3 and int(opt.policy.state["count"]) == 5


def test_agc_unit_wise_against_hand_computation():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(), torch.nn.Linear(12, 4))
    net = net.double()
    x = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    net(x).pow(3).sum().backward()
    named = list(net.named_parameters())
    grads = {n: p.grad.detach().clone() for n, p in named}
    before = {n: p.detach().clone() for n, p in named}
    opt = build_optimizer("sgd_agc", net.named_parameters(), lr=0.1, momentum=0.0, clipping_ratio=0.02,
                          exclude=["2"])  # fmt: skip
    opt.step()
    clipped_any = False
    for name, p in named:
        if name.startswith("2."):  # excluded: the final layer keeps its gradient
            expected_g = grads[name].numpy()
        else:
            expected_g = ref.agc(before[name].numpy(), grads[name].numpy(), c=0.02, eps=1e-3)
            clipped_any |= not np.allclose(expected_g, grads[name].numpy())
        np.testing.assert_allclose(p.grad.numpy(), expected_g, rtol=1e-12)
        np.testing.assert_allclose(p.detach().numpy(), before[name].numpy() - 0.1 * expected_g, rtol=1e-12)
    assert clipped_any and float(opt.step_stats()["clip_factor"]) < 1


def test_agc_exclusion_needs_names():
    params = [torch.nn.Parameter(torch.zeros(2, 2))]
    with pytest.raises(ValueError, match="needs parameter names"):
        build_optimizer("sgd_agc", params, exclude=["fc"])
    with pytest.raises(ValueError, match=r"\['head'\] matches no parameter"):
        build_optimizer("sgd_agc", torch.nn.Linear(2, 2).named_parameters(), exclude=["head"])


def test_any_entry_takes_a_policy_through_the_factory():
    problem = NoisyQuadratic.make(steps=40, noise_scale=3.0)
    results = []
    for name, kwargs in (("sgd_zclip", dict(warmup_steps=4)),
                         ("sgd", dict(clip_policy="zclip", clip_policy_args={"warmup_steps": 4}))):  # fmt: skip
        params = problem.params()
        opt = build_optimizer(name, params, lr=0.05, **kwargs)
        for k in range(40):
            problem.set_grads(k, params)
            opt.step()
        results.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*results))
    wrapped = build_optimizer("nsgdm", problem.params(), clip_policy="autoclip", clip_policy_args={"percentile": 25})
    assert isinstance(wrapped, ClipPolicyOptimizer) and wrapped.policy.percentile == 25
    with pytest.raises(ValueError, match="Invalid clip_policy: 'zscore'"):
        build_optimizer("sgd", problem.params(), clip_policy="zscore")
    with pytest.raises(ValueError, match="Unknown keyword.*'z'.*accepted: warmup_steps"):
        build_optimizer("sgd", problem.params(), clip_policy="zclip", clip_policy_args={"z": 2.0})
    with pytest.raises(ValueError, match="without a clip_policy"):
        build_optimizer("sgd", problem.params(), clip_policy_args={"percentile": 5})


def test_policy_validation():
    with pytest.raises(ValueError, match="Invalid percentile: 101"):
        AutoClip(percentile=101)
    with pytest.raises(ValueError, match="Invalid history: 0"):
        AutoClip(history=0)
    with pytest.raises(ValueError, match="Invalid warmup_steps: 0"):
        ZClip(warmup_steps=0)
    with pytest.raises(ValueError, match="Invalid ema_alpha: 1.0"):
        ZClip(ema_alpha=1.0)
    with pytest.raises(ValueError, match="Invalid clipping_ratio: -1"):
        AGC(clipping_ratio=-1)


def test_scheduler_reaches_the_base_optimizer():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = build_optimizer("adamw_zclip", params, lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    params[0].grad = torch.ones(2)
    opt.step()
    scheduler.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert set(opt.step_stats()) == {"grad_norm", "clip_factor", "clipped_fraction", "skipped_steps", "clip_threshold"}


def test_muon_takes_the_matrices_and_adamw_the_rest():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    twin.load_state_dict(net.state_dict())
    opt = build_optimizer("muon", net.parameters(), lr=0.02)
    assert isinstance(opt, MuonAdamW)
    matrices = [p for p in twin.parameters() if p.ndim == 2]
    others = [p for p in twin.parameters() if p.ndim != 2]
    muon = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
                            adjust_lr_fn="match_rms_adamw")  # fmt: skip
    adamw = torch.optim.AdamW(others, lr=0.02, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randn(10, 6)
    for _ in range(5):
        for model, steppers in ((net, [opt]), (twin, [muon, adamw])):
            for s in steppers:
                s.zero_grad()
            model(x).pow(2).mean().backward()
            for s in steppers:
                s.step()
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), twin.parameters()))
    assert len(opt.param_groups) == 2 and opt.param_groups[0]["params"] == [net[0].weight, net[2].weight]


def test_skip_in_front_of_a_composite_base_rolls_back_its_state():
    """The accelerator path (forced on CPU): a non-finite step in front of Muon+AdamW
    leaves the parameters and both parts' state as they were."""
    from optim.clipping import device_code_path

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    opt = build_optimizer("muon", net.parameters(), lr=0.02, clip_policy="zclip", clip_policy_args={"warmup_steps": 2})
    x = torch.randn(8, 4)
    with device_code_path():
        for k in range(4):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            if k == 3:
                net[0].bias.grad[0] = float("nan")
                params = [p.detach().clone() for p in net.parameters()]
                state = {id(p): {n: v.clone() for n, v in s.items() if torch.is_tensor(v)} for p, s in opt.state.items()}
                policy = {n: v.clone() for n, v in opt.policy.state.items()}
            opt.step()
    assert all(torch.equal(a, p) for a, p in zip(params, net.parameters()))
    assert all(torch.equal(state[id(p)][n], v) for p, s in opt.state.items() for n, v in s.items() if torch.is_tensor(v))
    assert all(torch.equal(policy[n], v) for n, v in opt.policy.state.items())
    assert int(opt.global_state["skipped_steps"]) == 1
