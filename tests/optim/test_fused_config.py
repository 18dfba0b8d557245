"""The fused path's configuration: explicit (``config=``), selected (``set_backend``), never the environment."""

from __future__ import annotations

import importlib

import pytest
import torch

from optim.fused_config import BLOCK, FusedConfig, selected_config, set_backend


def test_config_validation():
    with pytest.raises(ValueError, match="Invalid fused backend: 'cuda'"):
        FusedConfig(backend="cuda")
    with pytest.raises(ValueError, match="Invalid block: 1000"):
        FusedConfig(block=1000)
    with pytest.raises(ValueError, match="Invalid num_warps: 0"):
        FusedConfig(num_warps=0)


def test_set_backend_selects_and_resets():
    assert selected_config() == FusedConfig()
    set_backend("compile", combo_kernels=True)
    try:
        assert selected_config() == FusedConfig(backend="compile", compile_options=(("combo_kernels", True),))
    finally:
        set_backend("triton")
    assert selected_config() == FusedConfig()


def test_the_environment_is_not_read(monkeypatch):
    for name in ("CLIPBENCH_FUSED_BLOCK", "CLIPBENCH_FUSED_WARPS", "CLIPBENCH_FUSED_BACKEND"):
        monkeypatch.setenv(name, "not-a-value")
    module = importlib.reload(importlib.import_module("optim.fused"))
    assert module.BLOCK == BLOCK and module.selected_config().backend == "triton"


def test_block_and_warps_are_passed_explicitly(interpreted_fused):
    """A smaller block and fewer warps: more programs, the same elementwise update."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3000, generator=gen), torch.randn(7, 5, generator=gen)]
    norms = [torch.linalg.vector_norm(g) for g in grads]
    total = torch.linalg.vector_norm(torch.stack(norms))
    results = []
    for config in (None, FusedConfig(block=1024, num_warps=4)):
        params = [torch.ones_like(g) for g in grads]
        interpreted_fused.fused_clipped_sgd(params, grads, None, None, lr=0.1, clip_threshold=1.0, norms=norms,
                                            total_norm=total, applied=torch.isfinite(total), config=config)
        results.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*results))
    assert any(key[0] == 1024 for key in interpreted_fused._cache)  # the block is part of the plan
