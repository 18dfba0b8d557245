"""Checkpoint round trips, non-finite gradients, the evaluation point, and no host syncs."""

from __future__ import annotations

import io

import pytest
import torch

from optim import ClippedAdam, ClippedSGD, ClippedSSTM, EvaluationPointSwap, NSGDM, build_optimizer, evaluation_point, list_optimizers

from optim.clipping import device_code_path

from .conftest import NoisyQuadratic

OPTIMIZERS = {
    "clipped_sgd_avg": lambda p: ClippedSGD(p, lr=0.05, clip_level=0.5, momentum=0.9, weight_decay=1e-2, average=True),
    "clipped_sstm_cap": lambda p: ClippedSSTM(p, lr=0.5, L=2.0, clip_level=0.3, nu=0.5, max_ratio=0.9, weight_decay=1e-2),
    **{name: (lambda p, name=name: build_optimizer(name, p)) for name in list_optimizers()},
}


def _model(dtype):
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).to(dtype)


def _batches(n, dtype):
    g = torch.Generator().manual_seed(2)
    # Heavy-tailed targets so that the clipping optimizers do clip.
    return [
        (torch.randn(16, 6, generator=g, dtype=dtype), torch.distributions.StudentT(2.5).sample((16, 2)).to(dtype) * 3)
        for _ in range(n)
    ]


def _train(model, opt, batches):
    for x, y in batches:
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_is_bit_exact(kernel_path, name, dtype):
    batches = _batches(20, dtype)
    make = OPTIMIZERS[name]

    straight = _model(dtype)
    opt = make(straight.parameters())
    _train(straight, opt, batches)

    first = _model(dtype)
    opt1 = make(first.parameters())
    _train(first, opt1, batches[:9])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": opt1.state_dict()}, buffer)
    del first, opt1
    buffer.seek(0)
    # weights_only=True: what Lightning and torch >= 2.6 do by default.
    checkpoint = torch.load(buffer, weights_only=True)
    resumed = _model(dtype)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = make(resumed.parameters())
    opt2.load_state_dict(checkpoint["optimizer"])
    _train(resumed, opt2, batches[9:])

    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(evaluation_point(opt), evaluation_point(opt2)):
        assert torch.equal(a, b)


def test_loaded_state_does_not_alias_the_state_dict(quadratic):
    params = quadratic.params()
    opt = ClippedSSTM(params, lr=0.5, L=2.0, clip_level=1.0)
    quadratic.set_grads(0, params)
    opt.step()
    saved = opt.state_dict()
    snapshot = {k: v.clone() for k, v in saved["global_state"].items()}
    y_snapshot = saved["state"][0]["y"].clone()
    other_params = quadratic.params()
    other = ClippedSSTM(other_params, lr=0.5, L=2.0, clip_level=1.0)
    other.load_state_dict(saved)
    quadratic.set_grads(1, other_params)
    other.step()
    assert all(torch.equal(saved["global_state"][k], v) for k, v in snapshot.items())
    assert torch.equal(saved["state"][0]["y"], y_snapshot)


def _snapshot(params, opt):
    # Last-step statistics describe the attempted step; everything else must not move.
    stats = ("grad_norm", "clip_factor", "alpha", "clip_threshold")
    state = {k: v.clone() for k, v in opt.global_state.items() if k not in stats}
    policy = getattr(opt, "policy", None)  # a clipping policy's history/EMA is optimizer state too
    if policy is not None:
        state.update({f"policy/{k}": v.clone() for k, v in policy.state.items()})
    per_param = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    return [p.detach().clone() for p in params], state, per_param


MAKERS = [
    lambda p: ClippedSGD(p, lr=0.05, clip_level=0.5, momentum=0.9, weight_decay=1e-2, average=True),
    lambda p: ClippedSGD(p, lr=0.05, clip_level=0.5, clipping="coordinate_wise"),
    lambda p: ClippedSSTM(p, lr=0.5, L=2.0, clip_level=0.3, nu=0.5, max_ratio=0.9, weight_decay=1e-2),
    lambda p: ClippedSSTM(p, lr=0.5, L=2.0, clip_level=0.3, clipping="layer_wise"),
    # the heavy-tail family (its papers' definitions)
    lambda p: NSGDM(p, lr=0.05, momentum=0.9, clip_level=1.0, weight_decay=1e-2),
    lambda p: NSGDM(p, lr=0.05, clip_level=0.5, clipping="layer_wise", normalize="layer_wise"),
    lambda p: ClippedAdam(p, lr=0.05, clip_level=0.5),
    lambda p: ClippedAdam(p, lr=0.05, clip_level=0.3, clipping="coordinate_wise"),
    lambda p: build_optimizer("sgd_autoclip", p, lr=0.05),
    lambda p: build_optimizer("sgd_autoclip", p, lr=0.05, history=3),
    lambda p: build_optimizer("sgd_zclip", p, lr=0.05),  # the skip falls in the warm-up
    lambda p: build_optimizer("sgd_zclip", p, lr=0.05, warmup_steps=3, z_threshold=1.0, max_norm=5.0),
    lambda p: build_optimizer("adamw_zclip", p, lr=0.05, warmup_steps=3, z_threshold=1.0),
    lambda p: build_optimizer("adamw_autoclip", p, lr=0.05),
    lambda p: build_optimizer("sgd_agc", p, lr=0.05, clipping_ratio=0.05),
    lambda p: build_optimizer("nsgdm", p, lr=0.05, clip_policy="zclip", clip_policy_args={"warmup_steps": 3}),
]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), "overflow"])
@pytest.mark.parametrize("make", MAKERS)
def test_nonfinite_step_is_skipped_exactly(kernel_path, make, bad):
    """A skipped step changes nothing, so the run equals the run without that batch."""
    problem = NoisyQuadratic.make(steps=30)
    poisoned = 4
    params = problem.params(torch.float32)
    opt = make(params)
    for k in range(30):
        problem.set_grads(k, params)
        if k == poisoned:
            before = _snapshot(params, opt)
            if bad == "overflow":  # finite entries whose float32 norm overflows
                params[0].grad.fill_(1e30)
            else:
                params[0].grad[0, 0] = bad
        opt.step()
        if k == poisoned:
            after = _snapshot(params, opt)
            assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
            assert before[1].keys() == after[1].keys()
            for key in before[1]:
                if key != "skipped_steps":
                    assert torch.equal(before[1][key], after[1][key]), key
            for s0, s1 in zip(before[2], after[2]):
                assert all(torch.equal(s0[k], s1[k]) for k in s0)
    assert opt.num_skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in params)

    clean = problem.params(torch.float32)
    opt_clean = make(clean)
    for k in range(30):
        if k == poisoned:
            continue
        problem.set_grads(k, clean)
        opt_clean.step()
    for a, b in zip(params + evaluation_point(opt), clean + evaluation_point(opt_clean)):
        assert torch.equal(a, b)
    assert opt_clean.num_skipped_steps == 0


@pytest.mark.parametrize("make", MAKERS)
def test_nonfinite_raise_names_the_step_and_changes_nothing(make):
    problem = NoisyQuadratic.make(steps=5)
    params = problem.params()
    opt = make(params)
    opt.nonfinite = "raise"
    for k in range(3):
        problem.set_grads(k, params)
        opt.step()
    problem.set_grads(3, params)
    params[1].grad[2] = float("nan")
    before = _snapshot(params, opt)
    with pytest.raises(FloatingPointError, match=r"non-finite gradient norm \(nan\) at step 4"):
        opt.step()
    after = _snapshot(params, opt)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])


@pytest.mark.parametrize("make", MAKERS)
def test_step_never_reads_device_values(monkeypatch, make):
    """No .item()/bool()/float() inside step() on the path accelerators take: the CPU
    stand-in for CUDA's sync check. (On CPU tensors the kernels read values on purpose.)"""
    problem = NoisyQuadratic.make(steps=3)
    params = problem.params(torch.float32)
    opt = make(params)
    if isinstance(getattr(opt, "optimizer", None), torch.optim.Adam):
        pytest.skip("torch's Adam/AdamW keep the step count on the host off CUDA (capturable is CUDA-only)")

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor value inside step()")

    for k in range(3):
        problem.set_grads(k, params)
        with monkeypatch.context() as m:
            for attr in ("item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"):
                m.setattr(torch.Tensor, attr, forbidden)
            with device_code_path():
                opt.step()
        if k == 0:
            params[0].grad[0, 0] = float("nan")  # the skip path must not sync either
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("make", MAKERS)
def test_evaluation_point_swap_is_bit_exact(make, quadratic):
    params = quadratic.params(torch.float32)
    opt = make(params)
    for k in range(10):
        quadratic.set_grads(k, params)
        opt.step()
    live = [p.detach().clone() for p in params]
    target = [e.clone() for e in evaluation_point(opt)]
    with EvaluationPointSwap([opt]) as swap:
        assert swap.active
        assert all(torch.equal(p, e) for p, e in zip(params, target))
    assert all(torch.equal(p, x) for p, x in zip(params, live))
    differs = any(not torch.equal(a, b) for a, b in zip(live, target))
    assert differs == (isinstance(opt, ClippedSSTM) or opt.param_groups[0].get("average", False))


def test_evaluation_point_before_any_step_and_for_torch_optimizers(quadratic):
    params = quadratic.params()
    for opt in (
        ClippedSSTM(params, lr=0.5, L=2.0, clip_level=1.0),
        ClippedSGD(params, lr=0.1, clip_level=1.0, average=True),
        torch.optim.Adam(params),
    ):
        assert all(e is p for e, p in zip(evaluation_point(opt), params))


def test_swap_misuse_raises(quadratic):
    swap = EvaluationPointSwap([ClippedSSTM(quadratic.params(), lr=0.5, L=2.0, clip_level=1.0)])
    with pytest.raises(RuntimeError, match="without swap_in"):
        swap.swap_out()
    swap.swap_in()
    with pytest.raises(RuntimeError, match="twice"):
        swap.swap_in()


def test_grad_scaler_path_without_closure():
    """Under 16-mixed Lightning calls step() through GradScaler, without a closure."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = ClippedSSTM(model.parameters(), lr=0.1, L=1.0, clip_level=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(torch.nn.functional.mse_loss(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
    assert opt.global_state["step"].item() == 3
    # An overflowing step is skipped by the scaler before the optimizer sees it.
    opt.zero_grad()
    scaler.scale(torch.nn.functional.mse_loss(model(x), y) * float("inf")).backward()
    scaler.step(opt)
    assert opt.global_state["step"].item() == 3
