"""Device, RNG, data and process-group helpers of the gradient-noise probe.

Kept apart from :mod:`.probe` so that the probe reads as its phases; nothing here knows
about noise. ``preserved`` is what makes a probe invisible to the training run: modes,
buffers and every RNG state come back as they were.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

__all__ = [
    "all_gather_cat",
    "distributed",
    "index_loader",
    "now",
    "preserved",
    "rank_world",
    "seed_device",
    "to_device",
]


def index_loader(like: DataLoader, batches: list[list[int]], seed: int) -> DataLoader:
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


def to_device(batch: Any, device: torch.device) -> Any:
    """Every tensor in (nested) tuples, lists, namedtuples and mappings ``.to(device)``."""
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_world(group: Any) -> tuple[int, int]:
    if distributed():
        return dist.get_rank(group), dist.get_world_size(group)
    return 0, 1


def all_gather_cat(t: Tensor, group: Any) -> Tensor:
    """Concatenate every rank's ``t`` (same shape on all ranks) along dim 0, rank order."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return torch.cat(out)


def now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # time the work, not the kernel launches
    return time.perf_counter()


def seed_device(device: torch.device, seed: int) -> None:
    """Seed the CPU generator and the model's device only (both are forked by preserved)."""
    torch.random.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextmanager
def preserved(model: nn.Module, device: torch.device, *, train: bool) -> Iterator[None]:
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
