"""Map-style datasets over file lists, shared by the DataModules.

The DataModules scan and verify the layout; these classes only load one sample at a
time. A file that fails to decode raises :class:`CorruptImageError` naming it, or, with
``skip_corrupt=True``, is skipped with a warning that carries a running count and is
replaced by the next sample (the batch keeps its size; in evaluation that neighbour is
then counted twice, so repair the file for exact metrics).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import CorruptImageError, ImagePairError
from .images import read_image, read_mask
from .transforms import to_hwc

__all__ = [
    "CorruptImageWarning",
    "FixedPatchDataset",
    "ImageClassificationDataset",
    "PairedImageDataset",
    "SegmentationDataset",
    "bicubic_downscale",
    "load_pair",
]

# Past this many corrupt samples in a row, skipping would hide a broken dataset.
_MAX_CONSECUTIVE_CORRUPT = 64


class CorruptImageWarning(UserWarning):
    """A corrupt file was skipped because ``skip_corrupt=True``."""


class _SkippingDataset(Dataset):
    """Calls :meth:`load` and, when allowed, steps over corrupt files."""

    def __init__(self, num_sources: int, transform: Any, skip_corrupt: bool) -> None:
        self.num_sources = num_sources
        self.transform = transform
        self.skip_corrupt = skip_corrupt
        self.num_skipped = 0
        # Files found corrupt in this process are not read again (next epoch, repeats).
        self._corrupt: set[int] = set()

    def __len__(self) -> int:
        return self.num_sources

    def source(self, index: int) -> int:
        """The file (sample-list position) behind dataset ``index``."""
        return index

    def load(self, index: int) -> Any:  # pragma: no cover - abstract
        """Decode and transform sample ``index``; raises ``CorruptImageError`` naming the file."""
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        """Reseed the transform's private generators (called in each DataLoader worker)."""
        reseed = getattr(self.transform, "reseed", None)
        if reseed is not None:
            reseed(seed)

    def __getitem__(self, index: int) -> Any:
        if not self.skip_corrupt:
            return self.load(index)
        size = len(self)
        for step in range(min(size, _MAX_CONSECUTIVE_CORRUPT)):
            candidate = (index + step) % size
            if self.source(candidate) in self._corrupt:
                continue
            try:
                return self.load(candidate)
            except CorruptImageError as exc:
                self._corrupt.add(self.source(candidate))
                self.num_skipped += 1
                warnings.warn(
                    f"skip_corrupt=True: skipping a corrupt file ({self.num_skipped} skipped so far in this "
                    f"process): {exc}",
                    CorruptImageWarning,
                    stacklevel=2,
                )
        raise CorruptImageError(
            f"{min(size, _MAX_CONSECUTIVE_CORRUPT)} consecutive samples from index {index} are corrupt; "
            "the dataset is damaged beyond skipping, re-extract it"
        )


class ImageClassificationDataset(_SkippingDataset):
    """``(path, label)`` pairs to ``(image tensor, label)``.

    Args:
        samples: image paths and integer labels.
        transform: a :class:`~datamodules.transforms.ClassificationTransform`.
        skip_corrupt: skip undecodable files with a warning instead of raising.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable, skip_corrupt: bool = False) -> None:
        super().__init__(len(samples), transform, skip_corrupt)
        self.samples = list(samples)

    def load(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(read_image(path)), label


class SegmentationDataset(_SkippingDataset):
    """``(image path, mask path)`` pairs to ``(image tensor, mask tensor)``.

    Args:
        samples: image and mask paths.
        transform: a :class:`~datamodules.transforms.SegmentationTransform`.
        skip_corrupt: skip undecodable files with a warning instead of raising.

    Raises (on access):
        ImagePairError: an image and its mask differ in size.
    """

    def __init__(self, samples: Sequence[tuple[str, str]], transform: Callable, skip_corrupt: bool = False) -> None:
        super().__init__(len(samples), transform, skip_corrupt)
        self.samples = list(samples)

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image_path, mask_path = self.samples[index]
        image, mask = read_image(image_path), read_mask(mask_path)
        if tuple(image.shape[-2:]) != mask.shape:
            raise ImagePairError(
                f"image {image_path} is {image.shape[-1]}x{image.shape[-2]} but its mask {mask_path} is "
                f"{mask.shape[1]}x{mask.shape[0]}; an image and its SegmentationClass mask must have the same size"
            )
        return self.transform(image, mask)


def bicubic_downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR image made from HR by PIL bicubic (antialiased) downscaling by ``scale``.

    Args:
        hr: uint8 ``[3, H, W]``, ``H`` and ``W`` multiples of ``scale``.
        scale: integer factor.

    Returns:
        uint8 ``[3, H/scale, W/scale]``.
    """
    height, width = hr.shape[-2:]
    small = Image.fromarray(to_hwc(hr)).resize((width // scale, height // scale), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.array(small)).permute(2, 0, 1).contiguous()


def load_pair(
    hr_path: str, lr_path: str | None, scale: int, cache_dir: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an (LR, HR) pair; HR is mod-cropped to a multiple of ``scale``.

    Args:
        hr_path: HR image.
        lr_path: LR image, or ``None`` to make it by :func:`bicubic_downscale`.
        scale: HR/LR size ratio.
        cache_dir: decoded-image cache (see :func:`~datamodules.images.read_image`).

    Returns:
        ``(lr, hr)`` uint8 tensors ``[3, h, w]`` and ``[3, h·scale, w·scale]``.

    Raises:
        CorruptImageError: a file cannot be decoded.
        ImagePairError: the LR size is not HR/scale.
    """
    hr = read_image(hr_path, cache_dir)
    height, width = hr.shape[-2:]
    # HR sides that are not multiples of the scale are cut down (BasicSR's mod-crop).
    hr = hr[:, : height - height % scale, : width - width % scale]
    if lr_path is None:
        return bicubic_downscale(hr, scale), hr
    lr = read_image(lr_path, cache_dir)
    if lr.shape[-2] * scale != hr.shape[-2] or lr.shape[-1] * scale != hr.shape[-1]:
        raise ImagePairError(
            f"LR image {lr_path} is {lr.shape[-1]}x{lr.shape[-2]} but HR {hr_path} is {width}x{height}; "
            f"at scale {scale} the LR image must be {width // scale}x{height // scale}. Is the LR folder of another scale?"
        )
    return lr, hr


class PairedImageDataset(_SkippingDataset):
    """``(HR path, LR path or None)`` pairs to ``(lr, hr)`` tensors, ``repeat`` times over.

    Args:
        samples: HR paths with their LR paths (``None``: LR by bicubic downscaling).
        scale: HR/LR size ratio.
        transform: a :class:`~datamodules.transforms.PairedPatchTransform`.
        repeat: the list is seen this many times per epoch (random patches differ).
        skip_corrupt: skip undecodable files with a warning instead of raising.
        cache_dir: decoded-image cache (see :func:`~datamodules.images.read_image`).

    Raises (on access):
        ImagePairError: an LR image is not HR/scale in size.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, str | None]],
        scale: int,
        transform: Callable,
        repeat: int = 1,
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(len(samples), transform, skip_corrupt)
        self.samples, self.scale, self.repeat, self.cache_dir = list(samples), scale, repeat, cache_dir

    def __len__(self) -> int:
        return self.num_sources * self.repeat

    def source(self, index: int) -> int:
        return index % self.num_sources

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        hr_path, lr_path = self.samples[self.source(index)]
        lr, hr = load_pair(hr_path, lr_path, self.scale, self.cache_dir)
        try:
            return self.transform(lr, hr)
        except ValueError as exc:  # an image smaller than the patch
            raise ValueError(f"{hr_path}: {exc}") from exc


class FixedPatchDataset(_SkippingDataset):
    """Deterministic aligned patches: item ``j`` is a fixed patch of a fixed image.

    Args:
        samples: HR paths with their LR paths (``None``: bicubic LR).
        scale: HR/LR size ratio.
        patch_size: HR patch side (multiple of ``scale``).
        items: per item, ``(sample index, fy, fx)``; the LR patch's top-left corner is at
            ``(fy·(h - p), fx·(w - p))``, so ``(0.5, 0.5)`` is the centre patch.
        skip_corrupt: skip undecodable files with a warning instead of raising.
        cache_dir: decoded-image cache (see :func:`~datamodules.images.read_image`).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, str | None]],
        scale: int,
        patch_size: int,
        items: Sequence[tuple[int, float, float]],
        skip_corrupt: bool = False,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(len(items), None, skip_corrupt)
        self.samples, self.scale, self.patch_size, self.items = list(samples), scale, patch_size, list(items)
        self.cache_dir = cache_dir

    def source(self, index: int) -> int:
        return self.items[index][0]

    def load(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample, fy, fx = self.items[index]
        lr, hr = load_pair(*self.samples[sample], self.scale, self.cache_dir)
        p, s = self.patch_size // self.scale, self.scale
        height, width = lr.shape[-2:]
        if height < p or width < p:
            raise ValueError(
                f"LR image of {self.samples[sample][0]} is {width}x{height}, smaller than the {p}x{p} LR patch"
            )
        y, x = round(fy * (height - p)), round(fx * (width - p))
        lr, hr = lr[:, y : y + p, x : x + p], hr[:, y * s : (y + p) * s, x * s : (x + p) * s]
        return lr.float().div_(255).contiguous(), hr.float().div_(255).contiguous()
