"""A distributed sampler for evaluation that never repeats a sample."""

from __future__ import annotations

from typing import Iterator, Sized

from torch.utils.data import DistributedSampler

__all__ = ["UnpaddedDistributedSampler"]


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
