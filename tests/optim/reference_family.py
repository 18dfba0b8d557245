"""A literal float64 transcription of the heavy-tail family (the definitions in the methods' papers).

As :mod:`tests.optim.reference`: plain loops over numpy arrays, the formulas as printed,
so the optimizers are checked against the text and not against themselves. Hyperparameters
given as lists apply per tensor (one parameter group per tensor in the tests).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .reference import Grad, clip


def _per(value, n):
    return list(value) if isinstance(value, (list, tuple)) else [value] * n


def _norm(ts: Sequence[np.ndarray]) -> float:
    return math.sqrt(sum(float((t**2).sum()) for t in ts))


def nsgdm(x0, grad: Grad, steps: int, *, lr, momentum=0.9, clip_level=math.inf, weight_decay=0.0,
          clipping="norm", normalize="global") -> list[np.ndarray]:  # fmt: skip
    """m = β·m + (1-β)·clip(∇f + w·x, τ);  x ← x - η·m / max(‖m‖, 1e-12)."""
    n = len(x0)
    lrs, betas, wds = _per(lr, n), _per(momentum, n), _per(weight_decay, n)
    x = [np.array(t, dtype=np.float64) for t in x0]
    m = [np.zeros_like(t) for t in x]
    for k in range(steps):
        g = [gi + wds[i] * x[i] for i, gi in enumerate(grad(k, x))]
        d = clip(g, clip_level, clipping)
        m = [betas[i] * m[i] + (1 - betas[i]) * d[i] for i in range(n)]
        if normalize == "global":
            scale = [max(_norm(m), 1e-12)] * n
        else:
            scale = [max(_norm([t]), 1e-12) for t in m]
        x = [x[i] - lrs[i] * m[i] / scale[i] for i in range(n)]
    return x


def clipped_adamw(x0, grad: Grad, steps: int, *, lr, clip_level, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                  clipping="norm") -> list[np.ndarray]:  # fmt: skip
    """g̃ = clip(g, λ), then AdamW: bias correction, eps outside the root, x ← x·(1-η·w)."""
    n = len(x0)
    lrs, wds = _per(lr, n), _per(weight_decay, n)
    b1, b2 = betas
    x = [np.array(t, dtype=np.float64) for t in x0]
    m = [np.zeros_like(t) for t in x]
    v = [np.zeros_like(t) for t in x]
    for k in range(steps):
        t = k + 1
        g = clip(grad(k, x), clip_level, clipping)
        for i in range(n):
            x[i] = x[i] * (1 - lrs[i] * wds[i])
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            x[i] = x[i] - lrs[i] * m_hat / (np.sqrt(v_hat) + eps)
    return x


def autoclip_thresholds(norms: Sequence[float], p: float = 10.0, window: int | None = None) -> list[float]:
    """λₖ = the p-th percentile (numpy's linear interpolation) of the norms so far."""
    out = []
    for k in range(len(norms)):
        h = norms[: k + 1] if window is None else norms[max(0, k + 1 - window) : k + 1]
        out.append(float(np.percentile(np.array(h, dtype=np.float64), p)))
    return out


def zclip_thresholds(norms: Sequence[float], warmup=25, z_t=2.5, a=0.97, max_norm=None) -> list[float]:
    """λ per step (∞ where ZClip does not clip), the loop of the text written out."""
    out, recorded = [], []
    mu = var = None
    for norm in norms:
        if len(recorded) < warmup:
            recorded.append(norm)
            if len(recorded) == warmup:
                mu = sum(recorded) / warmup
                var = sum((r - mu) ** 2 for r in recorded) / warmup
            out.append(math.inf if max_norm is None else max_norm)
            continue
        sigma = math.sqrt(var)
        z = (norm - mu) / (sigma + 1e-6)
        if z > z_t:
            lam = mu + z_t**2 * sigma / z
            if max_norm is not None:
                lam = min(lam, max_norm)
            v = lam
        else:
            lam = math.inf if max_norm is None else max_norm
            v = norm
        out.append(lam)
        mu = a * mu + (1 - a) * v
        var = a * var + (1 - a) * (v - mu) ** 2
    return out


def agc(w: np.ndarray, g: np.ndarray, c: float = 0.01, eps: float = 1e-3) -> np.ndarray:
    """Unit-wise: rows of a matrix (slices along dim 0), the whole tensor for ndim ≤ 1."""
    units_w = [w] if w.ndim <= 1 else [w[i] for i in range(w.shape[0])]
    units_g = [g] if g.ndim <= 1 else [g[i] for i in range(g.shape[0])]
    out = []
    for wi, gi in zip(units_w, units_g):
        bound = c * max(_norm([wi]), eps)
        gn = _norm([gi])
        out.append(gi * bound / max(gn, 1e-6) if gn > bound else gi.copy())
    return out[0] if g.ndim <= 1 else np.stack(out)


def sgd_with_policy(x0, grad: Grad, steps: int, *, lr, momentum, threshold) -> tuple[list[np.ndarray], list[float]]:
    """g ← clip(g, λₖ) by global norm, λₖ = threshold(norms so far), then torch's SGD
    (dampening 0: b = μ·b + g, x ← x - γ·b). Returns (x^N, the norms ‖g‖ seen)."""
    x = [np.array(t, dtype=np.float64) for t in x0]
    b = [np.zeros_like(t) for t in x]
    norms: list[float] = []
    for k in range(steps):
        g = grad(k, x)
        norms.append(_norm(g))
        g = clip(g, threshold(norms), "norm")
        for i in range(len(x)):
            b[i] = momentum * b[i] + g[i]
            x[i] = x[i] - lr * b[i]
    return x, norms
