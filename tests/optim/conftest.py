"""Fixtures for the optimizer tests: a noisy quadratic with two parameter groups."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from optim.clipping import device_code_path


@dataclass
class NoisyQuadratic:
    """f(x) = ½ Σ_i (x_i - c_i)ᵀ H_i (x_i - c_i) over two tensors, with heavy-tailed
    additive gradient noise (Student-t, 2.5 degrees of freedom: finite variance, heavy
    tails), drawn once per step so every implementation sees the same ξ_k."""

    shapes: tuple[tuple[int, ...], ...]
    H: list[np.ndarray]
    c: list[np.ndarray]
    x0: list[np.ndarray]
    noise: list[list[np.ndarray]]

    @classmethod
    def make(cls, steps: int, seed: int = 0, noise_scale: float = 1.0, shapes=((4, 3), (5,))) -> "NoisyQuadratic":
        rng = np.random.default_rng(seed)
        H = [rng.uniform(0.2, 2.0, size=s) for s in shapes]
        c = [rng.normal(size=s) for s in shapes]
        x0 = [rng.normal(size=s) * 2 for s in shapes]
        noise = [[noise_scale * rng.standard_t(2.5, size=s) for s in shapes] for _ in range(steps)]
        return cls(tuple(shapes), H, c, x0, noise)

    def grad(self, k: int, x: list[np.ndarray]) -> list[np.ndarray]:
        return [h * (xi - ci) + xi_k for h, xi, ci, xi_k in zip(self.H, x, self.c, self.noise[k])]

    def params(self, dtype=torch.float64) -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(torch.tensor(t, dtype=dtype)) for t in self.x0]

    def set_grads(self, k: int, params: list[torch.Tensor]) -> None:
        x = [p.detach().double().numpy() for p in params]
        for p, g in zip(params, self.grad(k, x)):
            p.grad = torch.tensor(g, dtype=p.dtype)


@pytest.fixture
def quadratic() -> NoisyQuadratic:
    return NoisyQuadratic.make(steps=80)


@pytest.fixture(params=["host", "device"])
def kernel_path(request):
    """Run a test through both code paths of the clipped kernels: ``host`` (CPU tensors:
    skipped steps branch on the host, clip coefficients are numbers) and ``device`` (what
    an accelerator runs: masks and coefficients stay tensors), forced here on CPU."""
    if request.param == "device":
        with device_code_path():
            yield request.param
    else:
        yield request.param


@pytest.fixture
def interpreted_fused(monkeypatch):
    """:mod:`optim.fused` with its kernels built for the Triton interpreter (CPU tensors),
    reloaded back afterwards (``triton.jit`` reads ``TRITON_INTERPRET`` at definition)."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    module = importlib.reload(importlib.import_module("optim.fused"))
    assert module.INTERPRETED
    yield module
    monkeypatch.undo()
    importlib.reload(module)
