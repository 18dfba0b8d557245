"""BatchNorm running statistics recomputed at given weights, as ``torch.optim.swa_utils.update_bn``.

The running statistics of a network trained by clipped-SSTM were collected along the
parameters x; evaluated at y (or averaged clipped-SGD at x̄), the network needs statistics
of y's activations. :func:`recompute_batch_norm` recomputes them from a pass over
training batches; :class:`FixedTrainingBatches` draws those batches, the same ones each
time, without touching the training run's random streams or its DataLoader.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

__all__ = ["FixedTrainingBatches", "batch_norm_buffers", "batch_norm_layers", "recompute_batch_norm"]

_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # the lazy ones subclass these


def batch_norm_layers(module: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of ``module`` that keep running statistics."""
    return [m for m in module.modules() if isinstance(m, _BATCH_NORMS) and m.track_running_stats]


def batch_norm_buffers(layers: list[nn.Module]) -> list[Tensor]:
    """``running_mean``, ``running_var`` and ``num_batches_tracked`` of each layer."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    return [getattr(m, n) for m in layers for n in names if getattr(m, n, None) is not None]


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed torch (CPU and the initialised CUDA devices), numpy and Python's ``random``
    with ``seed`` inside the block, and restore their states after it.

    What the block draws (augmentations, dropout) is the same every time and leaves the
    caller's streams where they were.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class FixedTrainingBatches:
    """The first ``num_batches`` batches of a fixed random order of the training set.

    Iterating yields the same batches every time (same samples, same augmentations),
    and touches neither the training loader (its sampler, workers or iterator) nor its
    random streams: the samples come through a shallow copy of the training dataset
    whose ``transform`` is a fresh deep copy of the original each pass (augmentation
    pipelines with generators of their own, e.g. albumentations, start alike every pass
    and the training pipeline's is not advanced), drawn inside :func:`isolated_rng`, by a
    DataLoader with the training loader's batch size, collate function and workers.
    Under DDP rank r takes positions r, r + n, ... of the order.

    Args:
        loader: the training DataLoader.
        num_batches: batches per pass (fewer when the rank's share is smaller).
        seed: seeds the order, the augmentations and the workers.
        rank, world_size: this process's global rank and the world size.

    Raises:
        ValueError: ``loader`` is not a DataLoader with a ``batch_size`` (a custom batch
            sampler), or ``num_batches`` < 1.
    """

    def __init__(self, loader: Any, num_batches: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if num_batches < 1:
            raise ValueError(f"Invalid num_batches: {num_batches} (must be >= 1)")
        if not isinstance(loader, DataLoader) or loader.batch_size is None or isinstance(loader.dataset, IterableDataset):
            raise ValueError(
                f"Cannot draw BatchNorm batches from the training loader {type(loader).__name__} (needs a DataLoader "
                "with a batch_size over a map-style dataset); switch the recomputation off (recompute_bn=False)"
            )
        dataset = copy.copy(loader.dataset)
        # A pristine copy of the transform, copied again for each pass: its generators
        # start from the same state every time, and the training pipeline's never move.
        self._transform = copy.deepcopy(getattr(dataset, "transform", None))
        if hasattr(dataset, "worker_seed"):  # the per-epoch seed the training sampler sets
            dataset.worker_seed = seed
        reseed = getattr(dataset, "reseed", None)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        self.indices = order[rank::world_size][: num_batches * loader.batch_size].tolist()
        self.dataset, self.loader, self.seed, self._reseed = dataset, loader, seed, reseed

    def __iter__(self) -> Iterator[Any]:
        loader = self.loader
        if self._transform is not None:
            self.dataset.transform = copy.deepcopy(self._transform)
        batches = DataLoader(
            self.dataset,
            batch_size=loader.batch_size,
            sampler=self.indices,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            worker_init_fn=loader.worker_init_fn,
            generator=torch.Generator().manual_seed(self.seed),
        )
        with isolated_rng(self.seed):
            if self._reseed is not None:
                self._reseed(self.seed)
            yield from batches


@torch.no_grad()
def recompute_batch_norm(trainer: pl.Trainer, pl_module: pl.LightningModule, batches: Any) -> int:
    """Replace the running statistics of every BatchNorm layer by those of ``batches``.

    As ``torch.optim.swa_utils.update_bn``: the statistics are reset, the momentum set
    to None (an equal-weight average over the batches) and the module run in training
    mode on each batch (moved to the device by the strategy, under the precision
    plugin's autocast); momenta and train/eval modes are restored afterwards. The
    forward is ``pl_module.compute_loss(batch)`` when the module has one (the task
    modules), else ``pl_module(batch[0])``. Under DDP the ranks' statistics are
    averaged, so every rank evaluates the same network.

    Args:
        trainer: gives the strategy (device, DDP reduction) and the precision plugin.
        pl_module: the module, already at the weights to collect statistics for.
        batches: an iterable of training batches (e.g. :class:`FixedTrainingBatches`).

    Returns:
        The number of batches run.

    Raises:
        ValueError: ``batches`` yielded nothing.
    """
    layers = batch_norm_layers(pl_module)
    momenta = [m.momentum for m in layers]
    modes = [(m, m.training) for m in pl_module.modules()]
    forward = getattr(pl_module, "compute_loss", None) or (lambda batch: pl_module(batch[0]))
    count = 0
    iterator = iter(batches)
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        pl_module.train()
        for batch in iterator:
            batch = trainer.strategy.batch_to_device(batch)
            with trainer.precision_plugin.forward_context():
                forward(batch)
            count += 1
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:  # a generator: leave its RNG block now, also on an exception
            close()
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        for m, mode in modes:
            m.training = mode
    if count == 0:
        raise ValueError("Invalid BatchNorm batches: none were given (the training set is smaller than one batch?)")
    if trainer.world_size > 1:
        for m in layers:
            for stat in (m.running_mean, m.running_var):
                stat.copy_(trainer.strategy.reduce(stat.clone(), reduce_op="mean"))
    return count
