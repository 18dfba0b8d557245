"""A literal float64 transcription of the algorithms' pseudocode (Gorbunov, Danilova & Gasnikov 2020): the test oracle.

Written for clarity, not speed: plain loops over numpy arrays, the formulas as printed
(no lerp, no masks, no device tricks), so that the optimizers are checked against the
math and not against themselves.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

EPS = 1e-6

Grad = Callable[[int, list[np.ndarray]], list[np.ndarray]]


def clip(g: list[np.ndarray], lam: float, kind: str) -> list[np.ndarray]:
    if kind == "norm":
        norm = math.sqrt(sum(float((t**2).sum()) for t in g))
        return [min(1.0, lam / (norm + EPS)) * t for t in g]
    if kind == "layer_wise":
        return [min(1.0, lam / (float(np.sqrt((t**2).sum())) + EPS)) * t for t in g]
    if kind == "coordinate_wise":
        return [np.sign(t) * np.minimum(np.abs(t), lam) for t in g]
    raise ValueError(kind)


def clipped_sgd(
    x0: Sequence[np.ndarray],
    grad: Grad,
    steps: int,
    *,
    lr: float | Sequence[float],
    clip_level: float,
    momentum: float | Sequence[float] = 0.0,
    weight_decay: float | Sequence[float] = 0.0,
    clipping: str = "norm",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Algorithm 2 (+ momentum, weight decay after clipping). Returns (x^N, x̄^N).

    ``lr``, ``momentum``, ``weight_decay`` may be given per tensor (parameter groups).
    """
    n = len(x0)
    per = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
    lrs, mus, wds = per(lr), per(momentum), per(weight_decay)
    x = [np.array(t, dtype=np.float64) for t in x0]
    b = [np.zeros_like(t) for t in x]
    total = [np.zeros_like(t) for t in x]
    for k in range(steps):
        g = grad(k, x)
        d = clip(g, clip_level, clipping)
        for i in range(n):
            total[i] += x[i]
            b[i] = mus[i] * b[i] + d[i] + wds[i] * x[i]
            x[i] = x[i] - lrs[i] * b[i]
    return x, [t / steps for t in total]


def clipped_sstm(
    x0: Sequence[np.ndarray],
    grad: Grad,
    steps: int,
    *,
    lr: float,
    L: float,
    clip_level: float,
    nu: float = 1.0,
    max_ratio: float = 1.0,
    weight_decay: float | Sequence[float] = 0.0,
    clipping: str = "norm",
) -> dict[str, list[np.ndarray]]:
    """Algorithm 1. Returns the last x (x^N, where the next gradient would be taken:
    x^{N+1} in the paper's indexing), y^N and z^N."""
    n = len(x0)
    wds = list(weight_decay) if isinstance(weight_decay, (list, tuple)) else [weight_decay] * n
    a = 1.0 / lr
    r = max_ratio
    y = [np.array(t, dtype=np.float64) for t in x0]
    z = [t.copy() for t in y]
    A = 0.0

    def coefficients(k: int, A_k: float) -> tuple[float, float, float]:
        alpha = (k + 2) ** (2 * nu / (1 + nu)) / (2 * a * L)
        A_next = A_k + alpha
        if A_k / A_next > r:
            A_k = alpha * r / (1 - r)
            A_next = alpha / (1 - r)
        return alpha, A_k, A_next

    x = [t.copy() for t in y]
    for k in range(steps):
        alpha, A_k, A_next = coefficients(k, A)
        x = [(A_k * yi + alpha * zi) / A_next for yi, zi in zip(y, z)]
        g = grad(k, x)
        g = [gi + w * xi for gi, w, xi in zip(g, wds, x)]
        lam = clip_level / alpha
        d = clip(g, lam, clipping)
        z = [zi - alpha * di for zi, di in zip(z, d)]
        y = [(A_k * yi + alpha * zi) / A_next for yi, zi in zip(y, z)]
        A = A_next
    alpha, A_k, A_next = coefficients(steps, A)
    x = [(A_k * yi + alpha * zi) / A_next for yi, zi in zip(y, z)]
    return {"x": x, "y": y, "z": z}
