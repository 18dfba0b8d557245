"""Samplers: evaluation that never repeats a sample, training that resumes exactly."""

from __future__ import annotations

from typing import Iterator, Sized

import numpy as np
from torch.utils.data import DistributedSampler

__all__ = ["EpochShuffleSampler", "UnpaddedDistributedSampler", "derive_seed"]


def derive_seed(*parts: int | str) -> int:
    """A 32-bit seed that mixes all ``parts`` (strings are hashed stably, not with ``hash``).

    Args:
        parts: integers and/or labels such as ``"train"``.

    Returns:
        An int in ``[0, 2**32)``.
    """
    entropy = [p if isinstance(p, int) else int.from_bytes(p.encode(), "little") for p in parts]
    return int(np.random.SeedSequence([abs(e) for e in entropy]).generate_state(1)[0])


class UnpaddedDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``n`` gets samples ``r, r + n, r + 2n, ...``: each sample exactly once.

    ``DistributedSampler`` pads the index list with repeats so every rank gets the same
    number of samples; in validation those repeats would be counted twice by the metrics
    (accuracy, mIoU, PSNR). Here ranks may get one sample fewer instead. Lightning keeps a
    ``DistributedSampler`` it finds on a dataloader, so returning one from
    ``val_dataloader`` is enough. Uneven per-rank lengths are safe for validation as long
    as nothing runs a collective per step (torchmetrics syncs once, in ``compute``).

    Args:
        dataset: the evaluation dataset.
        num_replicas: world size.
        rank: this process's global rank.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class EpochShuffleSampler(DistributedSampler):
    """Training sampler whose order is a function of (seed, epoch, rank) alone.

    ``DistributedSampler`` with ``shuffle=True`` already draws each epoch's permutation
    from ``seed + epoch``; using it on one process too (``num_replicas=1``) makes the
    order independent of any RNG state, so a run resumed at an epoch boundary sees the
    same batches as an uninterrupted one. Lightning calls :meth:`set_epoch` every epoch
    and keeps a ``DistributedSampler`` it finds, so this also is the DDP sampler.

    :meth:`set_epoch` also records ``worker_seed`` on the dataset, from which the
    DataLoader workers (started anew each epoch) seed their augmentation RNGs, for the
    same reason (see ``datamodules.base.seed_worker``).

    Args:
        dataset: the training dataset.
        num_replicas: world size; rank: this process's global rank.
        seed: the shuffling seed (the DataModule derives it from its own ``seed``).
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.dataset.worker_seed = derive_seed(self.seed, self.rank, "workers", epoch)
