"""What one gradient-noise probe measured, and the count sketch it measures with.

:class:`ProbeResult` is produced by :class:`~benchmark.noise.probe.GradientNoiseProbe`
(streaming, from a model) or by :meth:`ProbeResult.from_noise` (from noise vectors held in
memory: synthetic validation, tests); :func:`~benchmark.noise.summary.summarize` turns it
into statistics and a verdict.

The count sketch S maps a D-dimensional noise vector to p dimensions: coordinate i goes
to bin h(i) mod p with sign ±1. It is linear (so a sketched strictly α-stable vector is
strictly α-stable with the same α, and the α estimator is exactly as consistent on
sketches) and preserves squared norms in expectation, E‖Sv‖² = ‖v‖².

References:
    Charikar, Chen, Farach-Colton. Finding frequent items in data streams. ICALP 2002.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .estimators import default_block_size

__all__ = ["ProbeResult", "count_sketch", "sketch_index"]


@dataclass
class ProbeResult:
    """What one probe at one point x measured (host tensors, float64).

    Attributes:
        norms: ``(K,)`` the noise norms ‖g_b − ∇f(x)‖ in full dimension.
        sketches: ``(K, p)`` count sketches of the noise vectors, or None (p = 0).
        block_norms: ``(n,)`` norms of the sums of n consecutive blocks of m noise vectors.
        block_size: m.
        trace_sq: tr Σ² estimated as the mean of (u_j·u_{j+1})² / 4 over the disjoint
            pair differences u_j = ξ_{2j} − ξ_{2j+1} (mean-free), or None (K < 4).
        full_grad_norm: ‖∇f(x)‖.
        num_params: D, the number of trainable parameters.
        batch_size: b, the mini-batch size of the noise (and of the full-gradient pass).
        subset_size: the number of training samples the full gradient averages.
        world_size: the number of ranks that shared the work.
        time_full_s, time_noise_s, time_s: wall-clock seconds of the two passes and in all.
        state_bytes: bytes of the probe's own buffers (the memory it adds to training).
        batch_indices: ``(K, b)`` the subset indices of each noise batch.
    """

    norms: Tensor
    sketches: Tensor | None
    block_norms: Tensor
    block_size: int
    trace_sq: float | None
    full_grad_norm: float
    num_params: int
    batch_size: int
    subset_size: int
    world_size: int = 1
    time_full_s: float = 0.0
    time_noise_s: float = 0.0
    time_s: float = 0.0
    state_bytes: int = 0
    batch_indices: Tensor | None = None

    @property
    def num_batches(self) -> int:
        """K, the number of noise samples."""
        return int(self.norms.numel())

    @property
    def trace(self) -> float:
        """tr Σ estimated as the mean squared noise norm."""
        return float((self.norms**2).mean())

    @property
    def block_member_norms(self) -> Tensor:
        """``(n, m)`` the norms of each block's members (blocks are consecutive samples)."""
        n, m = self.block_norms.numel(), self.block_size
        return self.norms[: n * m].reshape(n, m)

    @classmethod
    def from_noise(
        cls,
        noise: Tensor,
        *,
        sketch_dim: int = 1000,
        block_size: int | None = None,
        sketch_seed: int = 0,
        batch_size: int = 1,
        subset_size: int = 0,
    ) -> ProbeResult:
        """The result the probe would report for these noise vectors (no model involved).

        For synthetic noise (validation of the analysis, tests) and for small models
        whose noise fits in memory; uses the same sketch and block rules as the probe.

        Args:
            noise: ``(K, D)`` noise vectors in streaming order.
            sketch_dim: p (0: no sketch).
            block_size: m for the block sums; default ``default_block_size(K)``.
            sketch_seed: the seed of the sketch's hash (the probe's ``sketch_seed``).
            batch_size, subset_size: recorded as given.

        Raises:
            ValueError: for a non-2-D input or fewer than 4 vectors.
        """
        x = torch.as_tensor(noise).detach().to(torch.float64).cpu()
        if x.dim() != 2 or x.shape[0] < 4:
            raise ValueError(f"Invalid noise: shape {tuple(x.shape)} (must be (K >= 4, D))")
        k, d = x.shape
        m = block_size or default_block_size(k)
        n = k // m
        sketches = None
        if sketch_dim > 0:
            index = sketch_index(d, sketch_dim, sketch_seed, x.device)
            bins = torch.zeros(2 * sketch_dim, dtype=x.dtype)
            sketches = torch.stack([count_sketch(v, index, sketch_dim, bins).clone() for v in x])
        u = x[0 : 2 * (k // 2) : 2] - x[1 : 2 * (k // 2) : 2]
        pairs = (u[1:] * u[:-1]).sum(1) ** 2 / 4.0
        return cls(
            norms=torch.linalg.vector_norm(x, dim=1),
            sketches=sketches,
            block_norms=torch.linalg.vector_norm(x[: n * m].reshape(n, m, d).sum(1), dim=1),
            block_size=m,
            trace_sq=float(pairs.mean()),
            full_grad_norm=math.nan,
            num_params=d,
            batch_size=batch_size,
            subset_size=subset_size,
        )


def sketch_index(d: int, p: int, seed: int, device: torch.device) -> Tensor:
    """One hash per coordinate in [0, 2p): bin ``h mod p``, sign + below p, − above.

    Folding the sign into the bin keeps the sketch to one int32 per parameter and one
    ``index_add_``; generated on the CPU so that it is the same on every device.
    """
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2 * p, (d,), generator=gen, dtype=torch.int32).to(device)


def count_sketch(v: Tensor, index: Tensor, p: int, bins: Tensor) -> Tensor:
    """``S v`` for the count sketch S of ``index``: E‖S v‖² = ‖v‖² (uses ``bins`` as scratch)."""
    bins.zero_()
    bins.index_add_(0, index, v)
    return bins[:p] - bins[p:]
