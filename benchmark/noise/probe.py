"""The streaming gradient-noise probe: ‖∇f(x, ξ) − ∇f(x)‖ without storing gradients.

At the current parameters x the probe

1. accumulates the full gradient ∇f(x) over a fixed subset of the training set (the
   batch-size-weighted sum of per-batch gradients, one flat buffer);
2. draws K mini-batches, **iid**, from the same subset, and for each records the noise
   norm ‖g_b − ∇f(x)‖ and, optionally, a p-dimensional count sketch of the noise vector;
3. keeps, besides, one running block sum (the full-dimensional Mohammadi estimator,
   streamed), the previous noise vector and the previous pair difference (for tr Σ², the
   Gaussian reference).

Which estimate uses what:

* noise norms (exact, full dimension): histogram, QQ plot, Hill, kurtosis, max/median,
  tr Σ = mean ‖ξ‖²;
* count sketches (p-dim linear images of the noise): the α estimate with its interval,
  :func:`~benchmark.noise.estimators.alpha_estimate_with_ci`. A linear image of a strictly
  α-stable vector is strictly α-stable with the same α, so the estimator is exactly as
  consistent on the sketch as on the full vector; the sketch preserves norms in
  expectation (E‖Sξ‖² = ‖ξ‖²) and its distortion is reported;
* block sums (full dimension, one block size m): ``alpha_blocks``, the published
  estimator without sketching, a cross-check;
* differences of disjoint pairs, u_j = ξ_{2j} − ξ_{2j+1}: tr Σ² = E[(u_j·u_{j+1})²] / 4
  for the Gaussian reference. Differences rather than the ξ themselves because they are
  free of any residual mean μ of the noise, which would add ‖μ‖⁴ and can dominate
  tr Σ² in high dimension (BatchNorm's batch coupling gives such a μ).

Design decisions:

* **iid batches from the subset the full gradient is computed on.** The estimator needs
  mean-zero iid noise: batches from the full training set (or with augmentation) have a
  non-zero mean relative to the subset gradient, which pushes α̂ towards 1; batches that
  partition the subset (shuffle without replacement) sum to zero over each pass, are
  negatively correlated and push α̂ above 2. Each batch is therefore drawn independently
  (b distinct indices, uniformly) from the subset, by the probe itself.
* **Train mode by default.** The noise that matters is the one the optimizer sees, so
  BatchNorm uses batch statistics and dropout is active, as in training. The full
  gradient then uses the same batch size b (a BatchNorm gradient depends on b). The
  running statistics that train-mode forwards update are restored afterwards. ``mode=
  "eval"`` measures the noise of the eval-mode loss instead.
* **Nothing of the training run changes.** Gradients come from ``torch.autograd.grad``,
  so ``p.grad`` is never touched; module modes and every buffer (BatchNorm running
  statistics, ``num_batches_tracked``) are restored; the torch RNG (CPU and the model's
  device) is forked and the Python/NumPy global RNG states are restored, so the training
  run draws the same random numbers with or without the probe.
* **Memory O(#params), independent of K.** Five gradient-sized buffers (full gradient,
  current and previous noise, previous pair difference, block sum) in ``dtype`` plus an
  int32 sketch index, i.e. 24 bytes per parameter in float32, and K·(p + 1) numbers. No
  per-batch gradient is kept.
* **DDP.** With ``torch.distributed`` initialised, each rank takes every W-th batch of
  the full-gradient pass (all-reduced), draws ceil(K/W) noise batches with its own seed,
  and the norms, sketches and block statistics are all-gathered, so every rank (rank 0
  included) gets the whole result. Pass the unwrapped module, not the DDP wrapper: the
  probe's backward passes must not trigger DDP's gradient all-reduce.

References:
    Simsekli, Sagun, Gürbüzbalaban. A tail-index analysis of stochastic gradient noise in
    deep neural networks. ICML 2019 (the noise measured the same way).
    Charikar, Chen, Farach-Colton. Finding frequent items in data streams. ICALP 2002
    (count sketch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .estimators import default_block_size
from .result import ProbeResult
from .runtime import (
    all_gather_cat,
    distributed,
    index_loader,
    now,
    preserved,
    rank_world,
    seed_device,
    to_device,
)
from .stream import NoiseStream

__all__ = ["GradientNoiseProbe", "ProbeResult"]

_MODES = ("train", "eval")


@dataclass(frozen=True)
class _Plan:
    """The sizes and placement of one probe run (checked before any gradient is taken)."""

    params: list[Tensor]
    batch_size: int  # b
    subset: int  # samples in the probe subset
    device: torch.device
    rank: int
    world: int
    k_local: int  # noise batches of this rank
    block_size: int  # m
    num_params: int  # D
    transfer: Callable[[Any], Any]


class GradientNoiseProbe:
    """Measures the mini-batch gradient noise of a model at its current parameters.

    Args:
        model: the module whose trainable parameters define x (unwrapped, not DDP).
        loss_fn: ``loss_fn(batch) -> Tensor``, the scalar mean loss of a batch with
            ``model`` (a LightningModule's ``compute_loss``), called with the batch after
            ``transfer``.
        num_batches: K, the number of noise mini-batches (>= 4; rounded up to a multiple
            of the world size under DDP).
        batch_size: b; default the loader's ``batch_size``.
        sketch_dim: p, the dimension of the count sketch of each noise vector (0: none,
            the α estimate then comes from the streamed block sums only).
        block_size: m of the streamed full-dimensional block sums; default
            ``default_block_size(K per rank)``.
        mode: ``"train"`` (BatchNorm batch statistics, dropout on: the noise the optimizer
            sees) or ``"eval"``.
        dtype: of the gradient buffers, float32 or float64.
        seed: seeds the batch draws and the forward randomness (dropout); a run with
            another seed can be passed to :meth:`run`.
        sketch_seed: seeds the sketch's hash; keep it fixed so that sketches taken at
            different steps live in the same space.
        transfer: ``transfer(batch) -> batch`` moves a batch to the model's device;
            default: every tensor in (nested) tuples/lists/dicts ``.to(device)``.
        autocast: a zero-argument factory of the context the forward runs in (e.g. a
            Lightning precision plugin's ``forward_context``); default none.
        process_group: the ``torch.distributed`` group (default: the world).
        on_batch: ``on_batch(phase, done, total)`` after each gradient of this rank, with
            ``phase`` ``"full"`` (the full-gradient pass) or ``"noise"`` (the K
            mini-batches): for progress bars; a probe can take minutes on a CPU.

    Raises:
        ValueError: for an invalid argument (message names it and the valid range).

    References:
        Simsekli, Sagun, Gürbüzbalaban, ICML 2019.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any], Tensor],
        *,
        num_batches: int = 50,
        batch_size: int | None = None,
        sketch_dim: int = 1000,
        block_size: int | None = None,
        mode: str = "train",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        sketch_seed: int = 0,
        transfer: Callable[[Any], Any] | None = None,
        autocast: Callable[[], AbstractContextManager] | None = None,
        process_group: Any = None,
        on_batch: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if num_batches < 4:
            raise ValueError(f"Invalid num_batches: {num_batches} (must be >= 4)")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"Invalid batch_size: {batch_size} (must be >= 1)")
        if sketch_dim < 0:
            raise ValueError(f"Invalid sketch_dim: {sketch_dim} (must be >= 0)")
        if block_size is not None and block_size < 2:
            raise ValueError(f"Invalid block_size: {block_size} (must be >= 2)")
        if mode not in _MODES:
            raise ValueError(f"Invalid mode: {mode!r} (must be one of {_MODES})")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"Invalid dtype: {dtype} (must be torch.float32 or torch.float64)")
        self.model = model
        self.loss_fn = loss_fn
        self.num_batches = int(num_batches)
        self.batch_size = batch_size
        self.sketch_dim = int(sketch_dim)
        self.block_size = block_size
        self.mode = mode
        self.dtype = dtype
        self.seed = int(seed)
        self.sketch_seed = int(sketch_seed)
        self.transfer = transfer
        self.autocast = autocast or nullcontext
        self.process_group = process_group
        self.on_batch = on_batch


    def run(self, loader: DataLoader, *, seed: int | None = None) -> ProbeResult:
        """Probe at the model's current parameters.

        Args:
            loader: a map-style DataLoader over the fixed, deterministic subset (its
                dataset, collate_fn and worker settings are reused; its sampler is not:
                the probe draws its own batches).
            seed: overrides the constructor's seed for this run.

        Returns:
            A :class:`ProbeResult` (the same on every rank under DDP).

        Raises:
            ValueError: if the model has no trainable parameter, the loader has no
                batch size and none was given, the subset has no more than b samples,
                or the loss is not a scalar.
            FloatingPointError: if a gradient was not finite.
        """
        seed = self.seed if seed is None else int(seed)
        plan = self._plan(loader)
        t0 = now(plan.device)
        with preserved(self.model, plan.device, train=self.mode == "train"):
            seed_device(plan.device, seed + plan.rank)
            cur = torch.empty(plan.num_params, dtype=self.dtype, device=plan.device)  # one scratch for both passes
            full = self._full_gradient(loader, plan, seed, cur)
            t1 = now(plan.device)
            stream, draws = self._noise_pass(loader, plan, seed, full, cur)
            state_bytes = stream.state_bytes() + 2 * full.numel() * full.element_size()  # + full, current noise
            stream.gather(self.process_group)
            drawn = torch.tensor(draws, dtype=torch.int64, device=plan.device)
            if distributed():
                drawn = all_gather_cat(drawn, self.process_group)
            full_norm = float(torch.linalg.vector_norm(full, dtype=torch.float64))
            stream.release()
            del full, cur  # free before the host copies
        t2 = now(plan.device)
        return self._result(plan, stream, drawn, full_norm=full_norm, state_bytes=state_bytes, times=(t0, t1, t2))

    # ------------------------------------------------------------------ phases
    def _plan(self, loader: DataLoader) -> _Plan:
        """Check the model, the batch size and the subset; the sizes of this rank's share."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("Invalid model: it has no parameter with requires_grad=True")
        b = self.batch_size or loader.batch_size
        if not b:
            raise ValueError("Invalid batch_size: the loader has none; pass batch_size=")
        subset = len(loader.dataset)  # type: ignore[arg-type]
        if subset <= b:
            raise ValueError(f"Invalid subset: {subset} samples for batches of {b} (need more than b)")
        device = params[0].device
        rank, world = rank_world(self.process_group)
        k_local = -(-self.num_batches // world)
        return _Plan(
            params=params, batch_size=b, subset=subset, device=device, rank=rank, world=world, k_local=k_local,
            block_size=self.block_size or default_block_size(k_local), num_params=sum(p.numel() for p in params),
            transfer=self.transfer or (lambda batch: to_device(batch, device)),
        )

    def _full_gradient(self, loader: DataLoader, plan: _Plan, seed: int, cur: Tensor) -> Tensor:
        """∇f(x): every W-th batch of a fixed partition of the subset, weighted by size, all-reduced."""
        b = plan.batch_size
        full = torch.zeros(plan.num_params, dtype=self.dtype, device=plan.device)
        partition = [list(range(i, min(i + b, plan.subset))) for i in range(0, plan.subset, b)]
        mine = partition[plan.rank :: plan.world]
        weight = 0
        for i, (idx, batch) in enumerate(zip(mine, index_loader(loader, mine, seed))):
            self._gradient(plan.transfer(batch), plan.params, cur)
            full.add_(cur, alpha=len(idx))
            weight += len(idx)
            if self.on_batch is not None:
                self.on_batch("full", i + 1, len(mine))
        total = torch.tensor([float(weight)], dtype=torch.float64, device=plan.device)
        if distributed():
            dist.all_reduce(full, group=self.process_group)
            dist.all_reduce(total, group=self.process_group)
        return full.div_(float(total))

    def _noise_pass(
        self, loader: DataLoader, plan: _Plan, seed: int, full: Tensor, cur: Tensor
    ) -> tuple[NoiseStream, list[list[int]]]:
        """K iid mini-batches (b distinct indices each) from the subset, streamed; the stream and the draws."""
        gen = torch.Generator().manual_seed(seed * 1_000_003 + plan.rank)
        draws = [torch.randperm(plan.subset, generator=gen)[: plan.batch_size].tolist() for _ in range(plan.k_local)]
        stream = NoiseStream(
            plan.k_local, plan.block_size, plan.num_params, sketch_dim=self.sketch_dim,
            sketch_seed=self.sketch_seed, dtype=self.dtype, device=plan.device,
        )
        for t, batch in enumerate(index_loader(loader, draws, seed)):
            self._gradient(plan.transfer(batch), plan.params, cur)
            cur = stream.add(t, cur.sub_(full))
            if self.on_batch is not None:
                self.on_batch("noise", t + 1, plan.k_local)
        return stream, draws

    def _result(
        self,
        plan: _Plan,
        stream: NoiseStream,
        drawn: Tensor,
        *,
        full_norm: float,
        state_bytes: int,
        times: tuple[float, float, float],
    ) -> ProbeResult:
        """Host copies, the finiteness check and, under DDP, the samples back in single-process order."""
        norms = stream.norms.cpu()
        if not torch.isfinite(norms).all():
            raise FloatingPointError("GradientNoiseProbe: a gradient was not finite (NaN/inf loss?)")
        drawn = drawn.cpu()
        sketches = None if stream.sketches is None else stream.sketches.to("cpu", torch.float64)
        if plan.world > 1:
            # Each rank's blocks are consecutive within its own K/W samples and the block
            # norms arrive in rank order: put every rank's block members first, in rank
            # order, so that block j is norms[j*m:(j+1)*m] as in the single-process case.
            used = stream.num_blocks * plan.block_size
            ranks = torch.arange(plan.world * plan.k_local).reshape(plan.world, plan.k_local)
            order = torch.cat([ranks[:, :used].reshape(-1), ranks[:, used:].reshape(-1)])
            norms, drawn = norms[order], drawn[order]
            if sketches is not None:
                sketches = sketches[order]
        t0, t1, t2 = times
        return ProbeResult(
            norms=norms,
            sketches=sketches,
            block_norms=stream.block_norms.cpu(),
            block_size=plan.block_size,
            trace_sq=stream.trace_sq,
            full_grad_norm=full_norm,
            num_params=plan.num_params,
            batch_size=plan.batch_size,
            subset_size=plan.subset,
            world_size=plan.world,
            time_full_s=t1 - t0,
            time_noise_s=t2 - t1,
            time_s=t2 - t0,
            state_bytes=int(state_bytes),
            batch_indices=drawn,
        )

    # ----------------------------------------------------------------- private
    def _gradient(self, batch: Any, params: Sequence[Tensor], out: Tensor) -> None:
        """The flat gradient of ``loss_fn(batch)`` into ``out`` (``p.grad`` untouched)."""
        with self.autocast():
            loss = self.loss_fn(batch)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(f"Invalid loss: loss_fn must return a scalar tensor, got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else ""))
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        offset = 0
        for p, g in zip(params, grads):
            n = p.numel()
            if g is None:  # a parameter this loss does not reach (e.g. an unused head)
                out[offset : offset + n].zero_()
            else:
                out[offset : offset + n].copy_(g.reshape(-1))
            offset += n
