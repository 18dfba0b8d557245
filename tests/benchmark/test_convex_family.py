"""The heavy-tail family in the convex suite: vectorised runs == separate runs, and a tiny suite."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmark.convex.cli import main
from benchmark.convex.family import PerRunClippedAdam, PerRunNSGDM, PerRunPolicySGD
from optim import AutoClip, ClipPolicyOptimizer, ClippedAdam, ClippedSGD, NSGDM, ZClip, evaluation_point

CASES = {
    "nsgdm": (lambda p: PerRunNSGDM(p, lr=0.1, clip_level=1.0), lambda p: NSGDM(p, lr=0.1, clip_level=1.0)),
    "clipped_adam": (
        lambda p: PerRunClippedAdam(p, lr=0.1, clip_level=1.0, weight_decay=0.0),
        lambda p: ClippedAdam(p, lr=0.1, clip_level=1.0, weight_decay=0.0),
    ),
    "sgd_autoclip": (
        lambda p: PerRunPolicySGD(p, lr=0.1, policy=AutoClip(percentile=30)),
        lambda p: ClipPolicyOptimizer(ClippedSGD(p, lr=0.1, clip_level=math.inf, average=True), AutoClip(percentile=30)),
    ),
    "sgd_zclip": (
        lambda p: PerRunPolicySGD(p, lr=0.1, policy=ZClip(warmup_steps=5, z_threshold=1.0)),
        lambda p: ClipPolicyOptimizer(ClippedSGD(p, lr=0.1, clip_level=math.inf, average=True), ZClip(warmup_steps=5, z_threshold=1.0)),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_per_run_equals_separate_optimizers(name):
    """Row r follows run r of the plain class, each with its own skips, history and EMA."""
    make_vectorised, make_plain = CASES[name]
    runs, dim, steps = 4, 7, 60
    gen = torch.Generator().manual_seed(1)
    scale = torch.logspace(-1, 1, steps, dtype=torch.float64)[:, None, None]
    grads = torch.randn(steps, runs, dim, generator=gen, dtype=torch.float64) * scale
    grads[3, 2, 3] = math.inf  # run 2 alone skips step 3 (inside ZClip's warm-up)
    grads[20, 0, 0] = math.nan
    x0 = torch.randn(runs, dim, generator=gen, dtype=torch.float64)
    batched = torch.nn.Parameter(x0.clone())
    vectorised = make_vectorised([batched])
    singles = [torch.nn.Parameter(x0[r].clone()) for r in range(runs)]
    plain = [make_plain([p]) for p in singles]
    for t in range(steps):
        batched.grad = grads[t].clone()
        vectorised.step()
        for r in range(runs):
            singles[r].grad = grads[t, r].clone()
            plain[r].step()
    for r in range(runs):
        torch.testing.assert_close(batched.detach()[r], singles[r].detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(evaluation_point(vectorised)[0][r], evaluation_point(plain[r])[0], rtol=1e-12, atol=1e-14)
    assert vectorised.global_state["skipped_steps"].view(-1).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert 0 < vectorised.global_state["clipped_steps"].sum() < runs * steps


def test_tiny_suite_reports_the_family(tmp_path, capsys):
    out = tmp_path / "convex"
    argv = [
        "--problems", "quadratic", "--noise", "student_t:2.5", "--batch", "1",
        "--methods", "sgd,nsgdm,clipped_adam,sgd_autoclip,sgd_zclip", "--runs", "12", "--iters", "80", "--dim", "4",
        "--tune-runs", "6", "--sources", "theory,tuned", "--jobs", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### Quantiles of f(output) − f*" in printed
    for label in ("NSGD-M", "clipped-Adam", "SGD+AutoClip", "SGD+ZClip"):
        assert label in printed, label
    fixed = json.loads((out / "results.json").read_text())["experiments"][0]
    assert set(fixed["sweep"]) == {"sgd", "nsgdm", "clipped_adam", "sgd_autoclip", "sgd_zclip"}
    assert all(len(t["output"]["q0.99"]) == len(t["checkpoints"]) for t in fixed["trajectories"])
