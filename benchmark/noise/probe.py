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

import random
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .estimators import default_block_size
from .result import ProbeResult, count_sketch, sketch_index

__all__ = ["GradientNoiseProbe", "ProbeResult"]

_MODES = ("train", "eval")


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

    # ------------------------------------------------------------------ public
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
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("Invalid model: it has no parameter with requires_grad=True")
        b = self.batch_size or loader.batch_size
        if not b:
            raise ValueError("Invalid batch_size: the loader has none; pass batch_size=")
        dataset = loader.dataset
        subset = len(dataset)  # type: ignore[arg-type]
        if subset <= b:
            raise ValueError(f"Invalid subset: {subset} samples for batches of {b} (need more than b)")
        device = params[0].device
        rank, world = _rank_world(self.process_group)
        k_local = -(-self.num_batches // world)
        m = self.block_size or default_block_size(k_local)
        d = sum(p.numel() for p in params)
        transfer = self.transfer or (lambda batch: _to_device(batch, device))

        t0 = _now(device)
        with _preserved(self.model, device, train=self.mode == "train"):
            _seed_device(device, seed + rank)
            full = torch.zeros(d, dtype=self.dtype, device=device)
            cur = torch.empty(d, dtype=self.dtype, device=device)

            # (a) full gradient: every W-th batch of a fixed partition, weighted by size.
            partition = [list(range(i, min(i + b, subset))) for i in range(0, subset, b)]
            weight = 0
            mine = partition[rank::world]
            for i, (idx, batch) in enumerate(zip(mine, _loader(loader, mine, seed))):
                self._gradient(transfer(batch), params, cur)
                full.add_(cur, alpha=len(idx))
                weight += len(idx)
                if self.on_batch is not None:
                    self.on_batch("full", i + 1, len(mine))
            total = torch.tensor([float(weight)], dtype=torch.float64, device=device)
            if _distributed():
                dist.all_reduce(full, group=self.process_group)
                dist.all_reduce(total, group=self.process_group)
            full.div_(float(total))
            t1 = _now(device)

            # (b) K iid mini-batches from the same subset, streamed.
            gen = torch.Generator().manual_seed(seed * 1_000_003 + rank)
            draws = [torch.randperm(subset, generator=gen)[:b].tolist() for _ in range(k_local)]
            prev = torch.empty_like(cur)
            diff = torch.empty_like(cur)  # u_{j-1} = ξ_{2j-2} − ξ_{2j-1}
            block = torch.zeros_like(cur)
            norms = torch.zeros(k_local, dtype=torch.float64, device=device)
            n_blocks = k_local // m
            block_norms = torch.zeros(n_blocks, dtype=torch.float64, device=device)
            pair_sum = torch.zeros(1, dtype=torch.float64, device=device)
            p = self.sketch_dim
            sketches = torch.zeros(k_local, p, dtype=self.dtype, device=device) if p else None
            index = sketch_index(d, p, self.sketch_seed, device) if p else None
            bins = torch.zeros(2 * p, dtype=self.dtype, device=device) if p else None
            for t, batch in enumerate(_loader(loader, draws, seed)):
                self._gradient(transfer(batch), params, cur)
                cur.sub_(full)
                norms[t] = torch.linalg.vector_norm(cur, dtype=torch.float64)
                if p:
                    sketches[t] = count_sketch(cur, index, p, bins)
                if t % 2 == 1:
                    if t >= 3:  # (u_{j-1}·u_j)² with u_j = prev − cur, never materialised
                        pair_sum += (torch.dot(prev, diff) - torch.dot(cur, diff)).double() ** 2
                    torch.sub(prev, cur, out=diff)
                if t < n_blocks * m:
                    block.add_(cur)
                    if (t + 1) % m == 0:
                        block_norms[t // m] = torch.linalg.vector_norm(block, dtype=torch.float64)
                        block.zero_()
                prev, cur = cur, prev  # keep ξ_t for the next pair without a copy
                if self.on_batch is not None:
                    self.on_batch("noise", t + 1, k_local)
            state_bytes = sum(
                t.numel() * t.element_size()
                for t in (full, cur, prev, diff, block, norms, block_norms, sketches, index, bins)
                if t is not None
            )
            pairs = torch.tensor([float(max(k_local // 2 - 1, 0))], dtype=torch.float64, device=device)
            if _distributed():
                dist.all_reduce(pair_sum, group=self.process_group)
                dist.all_reduce(pairs, group=self.process_group)
                norms = _all_gather_cat(norms, self.process_group)
                block_norms = _all_gather_cat(block_norms, self.process_group)
                if sketches is not None:
                    sketches = _all_gather_cat(sketches, self.process_group)
            drawn = torch.tensor(draws, dtype=torch.int64, device=device)
            if _distributed():
                drawn = _all_gather_cat(drawn, self.process_group)
            full_norm = torch.linalg.vector_norm(full, dtype=torch.float64)
            del full, cur, prev, diff, block, index, bins  # free before the host copies
        t2 = _now(device)

        norms_h = norms.cpu()
        if not torch.isfinite(norms_h).all():
            raise FloatingPointError("GradientNoiseProbe: a gradient was not finite (NaN/inf loss?)")
        drawn = drawn.cpu()
        sketches_h = None if sketches is None else sketches.to("cpu", torch.float64)
        if world > 1:
            # Each rank's blocks are consecutive within its own K/W samples and the block
            # norms arrive in rank order: put every rank's block members first, in rank
            # order, so that block j is norms[j*m:(j+1)*m] as in the single-process case.
            ranks = torch.arange(world * k_local).reshape(world, k_local)
            order = torch.cat([ranks[:, : n_blocks * m].reshape(-1), ranks[:, n_blocks * m :].reshape(-1)])
            norms_h, drawn = norms_h[order], drawn[order]
            if sketches_h is not None:
                sketches_h = sketches_h[order]
        return ProbeResult(
            norms=norms_h,
            sketches=sketches_h,
            block_norms=block_norms.cpu(),
            block_size=m,
            trace_sq=float(pair_sum / pairs) / 4.0 if float(pairs) > 0 else None,  # u has covariance 2Σ
            full_grad_norm=float(full_norm),
            num_params=d,
            batch_size=b,
            subset_size=subset,
            world_size=world,
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


# ---------------------------------------------------------------------- helpers
def _loader(like: DataLoader, batches: list[list[int]], seed: int) -> DataLoader:
    """A DataLoader over given index lists, with ``like``'s dataset, collation and workers."""
    return DataLoader(
        like.dataset,
        batch_sampler=batches,
        collate_fn=like.collate_fn,
        num_workers=like.num_workers,
        pin_memory=like.pin_memory,
        worker_init_fn=like.worker_init_fn,
        multiprocessing_context=like.multiprocessing_context if like.num_workers else None,
        # Worker seeds come from this generator, not from the global RNG.
        generator=torch.Generator().manual_seed(seed),
    )


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: _to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank_world(group: Any) -> tuple[int, int]:
    if _distributed():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def _all_gather_cat(t: Tensor, group: Any) -> Tensor:
    """Concatenate every rank's ``t`` (same shape on all ranks) along dim 0, rank order."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return torch.cat(out)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # time the work, not the kernel launches
    return time.perf_counter()


def _seed_device(device: torch.device, seed: int) -> None:
    """Seed the CPU generator and the model's device only (both are forked by _preserved)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextmanager
def _preserved(model: nn.Module, device: torch.device, *, train: bool) -> Iterator[None]:
    """Set the probe's mode; afterwards restore modes, buffers and every RNG state."""
    modes = [(mod, mod.training) for mod in model.modules()]
    buffers = [(buf, buf.detach().clone()) for buf in model.buffers()]
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            model.train(train)
            yield
    finally:
        with torch.no_grad():
            for buf, saved in buffers:
                buf.copy_(saved)
        for mod, mode in modes:
            mod.training = mode  # per module: a model may mix modes (frozen BatchNorm)
        random.setstate(py_state)
        np.random.set_state(np_state)
