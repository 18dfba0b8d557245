"""The clipping kinds: what "clipped" and "clip factor" mean, the same on every code path.

Expected values are computed by hand from the definitions in :mod:`optim.clipping`
(a step is clipped when some tensor or coordinate was actually scaled; the clip factor is
‖clip(g)‖/‖g‖ on a clipped step and exactly 1 otherwise), for each path: the CPU host
path, the device path (``device_path=True``), foreach and single-tensor kernels, and the
fused Triton kernels under the Triton interpreter.
"""

from __future__ import annotations

import math

import pytest
import torch

from optim import ClippedSGD, ClippedSSTM
from optim.clipping import (
    CLIPPING_KINDS,
    ClipCode,
    clip_coefficient,
    get_clipping,
    global_norm,
    tensor_norms,
)

INF = float("inf")
GRADS = [[3.0, 4.0], [0.0, 0.5]]  # ‖g₁‖ = 5, ‖g₂‖ = 0.5, ‖g‖ = √25.25, ‖g‖_∞ = 4
NORM = math.sqrt(25.25)
EPS = 1e-6

# (clipping, λ, gradient, clipped, clip factor): each worked out from the definitions.
CASES = [
    ("norm", 1.0, GRADS, True, 1.0 / (NORM + EPS)),
    ("norm", 10.0, GRADS, False, 1.0),
    ("norm", INF, GRADS, False, 1.0),
    # only the first tensor is scaled: ‖clip(g)‖² = (5·1/(5+eps))² + 0.5²
    ("layer_wise", 1.0, GRADS, True, math.hypot(5.0 / (5.0 + EPS), 0.5) / NORM),
    ("layer_wise", 10.0, GRADS, False, 1.0),  # no tensor above λ: not clipped (not 0.99999...)
    ("layer_wise", INF, GRADS, False, 1.0),
    # the coordinate 4 becomes 3.5: ‖clip(g)‖² = 9 + 12.25 + 0.25
    ("coordinate_wise", 3.5, GRADS, True, math.sqrt(21.5) / NORM),
    ("coordinate_wise", 4.0, GRADS, False, 1.0),  # |g_i| = λ is not scaled
    ("coordinate_wise", INF, GRADS, False, 1.0),
    # a zero gradient is never clipped and reports factor 1, even for λ below eps
    *[(kind, lam, [[0.0, 0.0], [0.0, 0.0]], False, 1.0) for kind in CLIPPING_KINDS for lam in (1.0, 1e-9)],
]

PATHS = [
    dict(foreach=True),  # CPU: the host path for norm clipping
    dict(foreach=False),
    dict(foreach=True, device_path=True),  # what an accelerator runs
    dict(foreach=False, device_path=True),
]


def _one_step(opt_cls, clipping, lam, grads, dtype=torch.float64, **kwargs):
    params = [torch.nn.Parameter(torch.ones(2, dtype=dtype)) for _ in grads]
    if opt_cls is ClippedSGD:
        opt = ClippedSGD(params, lr=0.01, clip_level=lam, clipping=clipping, **kwargs)
    else:
        # α₁ = (0+2) / (2·(1/lr)·L) = 0.25, so B = λ·α₁ makes the first threshold λ.
        opt = ClippedSSTM(params, lr=0.5, L=2.0, clip_level=lam * 0.25, clipping=clipping, **kwargs)
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=dtype)
    opt.step()
    return opt


def _check(opt, clipped, factor, rtol=1e-9):
    stats = opt.step_stats()
    assert opt.global_state["clipped_steps"].item() == float(clipped)
    assert stats["clipped_fraction"].item() == float(clipped)
    if factor == 1.0:
        assert stats["clip_factor"].item() == 1.0  # exactly, when nothing was scaled
    else:
        assert stats["clip_factor"].item() == pytest.approx(factor, rel=rtol)


@pytest.mark.parametrize("path", PATHS, ids=["host-foreach", "host-single", "device-foreach", "device-single"])
@pytest.mark.parametrize("opt_cls", [ClippedSGD, ClippedSSTM])
@pytest.mark.parametrize("clipping, lam, grads, clipped, factor", CASES)
def test_clip_statistics_on_every_path(opt_cls, path, clipping, lam, grads, clipped, factor):
    _check(_one_step(opt_cls, clipping, lam, grads, **path), clipped, factor)


@pytest.mark.parametrize("opt_cls", [ClippedSGD, ClippedSSTM])
@pytest.mark.parametrize("clipping, lam, grads, clipped, factor", CASES)
def test_clip_statistics_on_the_fused_path(interpreted_fused, opt_cls, clipping, lam, grads, clipped, factor):
    _check(_one_step(opt_cls, clipping, lam, grads, dtype=torch.float32, fused=True), clipped, factor, rtol=1e-5)


def test_clipped_steps_count_only_scaled_steps():
    """Over several steps: λ = 3.5 coordinate-wise clips the steps with a |g_i| > 3.5 only."""
    params = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]
    opt = ClippedSGD(params, lr=0.01, clip_level=3.5, clipping="coordinate_wise")
    for g in ([1.0, 2.0], [4.0, 0.0], [0.0, 0.0], [-3.6, 1.0], [3.5, -3.5]):
        params[0].grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    assert opt.global_state["clipped_steps"].item() == 2
    assert opt.step_stats()["clipped_fraction"].item() == pytest.approx(2 / 5)


def test_skipped_step_reports_factor_one_and_is_not_counted():
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = ClippedSGD(params, lr=0.01, clip_level=0.1, clipping="layer_wise")
    params[0].grad = torch.tensor([float("nan"), 1.0])
    opt.step()
    assert opt.num_skipped_steps == 1
    assert opt.global_state["clipped_steps"].item() == 0 and opt.step_stats()["clip_factor"].item() == 1.0


@pytest.mark.parametrize("clipping", CLIPPING_KINDS)
@pytest.mark.parametrize("masked", [False, True])
def test_apply_is_the_clip_operator(clipping, masked):
    """``apply`` against the formulas: clip(g) = scale · tensors (zeros when masked off)."""
    kind = get_clipping(clipping)
    grads = [torch.tensor(g, dtype=torch.float64) for g in GRADS]
    norms = tensor_norms(grads)
    total = global_norm(norms)
    mask = torch.tensor(False) if masked else None
    tensors, scale = kind.apply(grads, 1.0, norms=norms, total_norm=total, mask=mask)
    scales = scale if isinstance(scale, list) else [scale] * len(tensors)
    clipped = [s * t for s, t in zip(scales, tensors)]
    expected = {
        "norm": [g / (NORM + EPS) for g in grads],
        "layer_wise": [grads[0] / (5.0 + EPS), grads[1]],
        "coordinate_wise": [g.clamp(-1.0, 1.0) for g in grads],
    }[clipping]
    for c, e in zip(clipped, expected):
        torch.testing.assert_close(c, torch.zeros_like(e) if masked else e, rtol=1e-12, atol=0)
    assert all(torch.equal(g, torch.tensor(v, dtype=torch.float64)) for g, v in zip(grads, GRADS))  # untouched


def test_kinds_are_one_table():
    assert CLIPPING_KINDS == ("norm", "layer_wise", "coordinate_wise")
    assert [get_clipping(k).code for k in CLIPPING_KINDS] == list(ClipCode)
    assert get_clipping(get_clipping("norm")) is get_clipping("norm")
    with pytest.raises(ValueError, match="Invalid clipping: 'l1'"):
        get_clipping("l1")
    torch.testing.assert_close(clip_coefficient(torch.tensor(4.0), 2.0), torch.tensor(2.0 / (4.0 + EPS)))
