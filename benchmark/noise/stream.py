"""The running statistics of one probe's noise vectors, kept in O(#params) memory.

:class:`NoiseStream` receives the noise vectors ξ_t = g_t − ∇f(x) of one rank, one at a
time, and keeps only what the summary needs (see :mod:`.probe` for which estimate uses
what):

* the K norms ‖ξ_t‖ and, with p > 0, the K count sketches Sξ_t;
* one running block sum of m consecutive ξ_t, whose norm is recorded when a block is
  complete (the full-dimensional Mohammadi estimator, streamed);
* Σ_j (u_{j-1}·u_j)² over the disjoint pair differences u_j = ξ_{2j} − ξ_{2j+1}, for
  tr Σ², from the previous noise vector and the previous pair difference.

Four gradient-sized buffers live here (previous noise, pair difference, block sum, and
the sketch's int32 index); the probe adds the full gradient and the current noise.

References:
    Charikar, Chen, Farach-Colton. Finding frequent items in data streams. ICALP 2002
    (count sketch).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .result import count_sketch, sketch_index
from .runtime import all_gather_cat, distributed

__all__ = ["NoiseStream"]


class NoiseStream:
    """Streamed norms, sketches, block norms and pair products of K noise vectors.

    Args:
        num_batches: K of this rank.
        block_size: m of the block sums (the last K mod m vectors join no block).
        num_params: D, the length of a noise vector.
        sketch_dim: p of the count sketch (0: none).
        sketch_seed: the seed of the sketch's hash (fixed: sketches of different probes
            live in the same space).
        dtype, device: of the gradient-sized buffers.
    """

    def __init__(
        self,
        num_batches: int,
        block_size: int,
        num_params: int,
        *,
        sketch_dim: int,
        sketch_seed: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_batches = num_batches
        self.block_size = block_size
        self.num_blocks = num_batches // block_size
        self.sketch_dim = sketch_dim
        self.prev = torch.empty(num_params, dtype=dtype, device=device)
        self.diff = torch.empty_like(self.prev)  # u_{j-1} = ξ_{2j-2} − ξ_{2j-1}
        self.block = torch.zeros_like(self.prev)
        self.norms = torch.zeros(num_batches, dtype=torch.float64, device=device)
        self.block_norms = torch.zeros(self.num_blocks, dtype=torch.float64, device=device)
        self.pair_sum = torch.zeros(1, dtype=torch.float64, device=device)
        self.pairs = torch.tensor([float(max(num_batches // 2 - 1, 0))], dtype=torch.float64, device=device)
        p = sketch_dim
        self.sketches = torch.zeros(num_batches, p, dtype=dtype, device=device) if p else None
        self.index = sketch_index(num_params, p, sketch_seed, device) if p else None
        self.bins = torch.zeros(2 * p, dtype=dtype, device=device) if p else None

    def add(self, t: int, cur: Tensor) -> Tensor:
        """Record the t-th noise vector ``cur``; returns the buffer to write the next one into.

        ``cur`` is kept as the previous vector (the pair products need it) and the old
        previous buffer is handed back, so no vector is ever copied.
        """
        self.norms[t] = torch.linalg.vector_norm(cur, dtype=torch.float64)
        if self.sketches is not None:
            self.sketches[t] = count_sketch(cur, self.index, self.sketch_dim, self.bins)
        if t % 2 == 1:
            if t >= 3:  # (u_{j-1}·u_j)² with u_j = prev − cur, never materialised
                self.pair_sum += (torch.dot(self.prev, self.diff) - torch.dot(cur, self.diff)).double() ** 2
            torch.sub(self.prev, cur, out=self.diff)
        m = self.block_size
        if t < self.num_blocks * m:
            self.block.add_(cur)
            if (t + 1) % m == 0:
                self.block_norms[t // m] = torch.linalg.vector_norm(self.block, dtype=torch.float64)
                self.block.zero_()
        self.prev, cur = cur, self.prev  # keep ξ_t for the next pair without a copy
        return cur

    def state_bytes(self) -> int:
        """Bytes of the buffers held here."""
        held = (self.prev, self.diff, self.block, self.norms, self.block_norms, self.sketches, self.index, self.bins)
        return sum(t.numel() * t.element_size() for t in held if t is not None)

    def gather(self, group: Any) -> None:
        """Under ``torch.distributed``: sum the pair statistics, concatenate the per-sample ones (rank order)."""
        if not distributed():
            return
        dist.all_reduce(self.pair_sum, group=group)
        dist.all_reduce(self.pairs, group=group)
        self.norms = all_gather_cat(self.norms, group)
        self.block_norms = all_gather_cat(self.block_norms, group)
        if self.sketches is not None:
            self.sketches = all_gather_cat(self.sketches, group)

    def release(self) -> None:
        """Free the gradient-sized buffers (the per-sample statistics stay)."""
        del self.prev, self.diff, self.block, self.index, self.bins

    @property
    def trace_sq(self) -> float | None:
        """tr Σ² = E[(u_j·u_{j+1})²] / 4 (u has covariance 2Σ); None with fewer than 4 vectors."""
        pairs = float(self.pairs)
        return float(self.pair_sum / pairs) / 4.0 if pairs > 0 else None
