"""DIV2K single-image super-resolution (bicubic degradation, x2/x3/x4)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from .base import ClipbenchDataModule, derive_seed
from .datasets import CorruptImageWarning, FixedPatchDataset, PairedImageDataset
from .embedded import EMBEDDED
from .errors import CorruptImageError, DatasetLayoutError, ImagePairError
from .holdout import DEFAULT_HOLDOUT_FRACTION
from .images import image_size
from .transforms import Backend, PairedPatchTransform

__all__ = ["DIV2KDataModule", "MissingLRWarning"]

_LAYOUT = (
    "<root>/DIV2K_train_HR/0001.png, <root>/DIV2K_train_LR_bicubic/X4/0001x4.png, <root>/DIV2K_valid_HR/0801.png and "
    "<root>/DIV2K_valid_LR_bicubic/X4/0801x4.png (X2/X3 likewise)"
)
_FOLDER = {"train": "train", "val": "valid"}


class MissingLRWarning(UserWarning):
    """An LR folder is missing; LR images are computed from HR by bicubic downscaling."""


class DIV2KDataModule(ClipbenchDataModule):
    """DIV2K: HR images with their bicubic LR versions; aligned random patch training.

    Training samples are ``repeat`` random aligned patches per image per epoch (HR
    ``patch_size``, LR ``patch_size / scale``), each under one of the 8 flips/90° rotations.
    Validation uses whole images (batch 1: sizes differ) or the centre ``val_crop_size``
    HR crop of each (batchable). No normalisation: the model owns it.

    Batches: ``(lr float32 [B, 3, h, w] in [0, 1], hr float32 [B, 3, h·scale, w·scale] in [0, 1])``.

    HR sides that are not multiples of ``scale`` are cut to the nearest multiple (BasicSR's
    mod-crop); the LR image must then be exactly HR/scale. When the LR folder of a split is
    missing, LR is made from HR by PIL bicubic downscaling (antialiased, close to but not
    bit-identical with the official MATLAB ``imresize``), with a :class:`MissingLRWarning`.

    Args:
        data_dir: the folder holding ``DIV2K_train_HR`` etc.; ``None``: the embedded
            DIV2K-like dataset (24 train + 8 val HR images of 192-240 px).
        scale: 2, 3 or 4.
        patch_size: HR training patch side (multiple of ``scale``).
        repeat: random patches per image per epoch (DIV2K has only 800 images).
        val_mode: ``"full"`` (whole images, ``val_batch_size`` must be 1) or
            ``"center_crop"`` (HR centre crop of ``val_crop_size``).
        val_crop_size: HR side of the validation centre crop (multiple of ``scale``).
        batch_size: training batch size per process.
        val_batch_size: evaluation batch size.
        num_workers: DataLoader worker processes.
        pin_memory: ``None``: when CUDA is available.
        persistent_workers: keep workers between epochs.
        skip_corrupt: skip unreadable images (headers checked in :meth:`setup`, pixels
            at load time) with a warning instead of raising.
        seed: augmentation / shuffling / probe-subset seed.
        backend: ``"torchvision"`` (measured faster) or ``"albumentations"``.
        tune_split: train on the training split minus its held-out part and evaluate on
            that part instead of the validation split (hyperparameter tuning).
        holdout_fraction: the held-out share of the training split (stable hash of the
            sample's path; default 10%).
        cache_dir: keep decoded copies of the images here (uncompressed ``.npy``,
            memory-mapped; ~7 GB for DIV2K train HR + x4 LR) so that a training patch
            costs a copy instead of decoding a 2K PNG (~170 ms). Written on first read,
            safe to share between workers and ranks. ``None``: decode on every access.

    Raises:
        ValueError: invalid sizes or combination of options; (in :meth:`setup`) an HR
            image smaller than the training patch or the validation crop.
        DatasetLayoutError, ImagePairError, CorruptImageError: (in :meth:`setup`) a
            missing folder or LR file, an LR/HR size mismatch, an unreadable header.
    """

    task = "super_resolution"
    embedded = EMBEDDED["div2k"]

    def __init__(
        self,
        data_dir: str | None = None,
        scale: Literal[2, 3, 4] = 4,
        patch_size: int = 96,
        repeat: int = 20,
        val_mode: Literal["full", "center_crop"] = "full",
        val_crop_size: int = 480,
        batch_size: int = 16,
        val_batch_size: int = 1,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
        seed: int = 0,
        backend: Backend = "torchvision",
        cache_dir: str | None = None,
        tune_split: bool = False,
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            skip_corrupt=skip_corrupt,
            seed=seed,
            backend=backend,
            tune_split=tune_split,
            holdout_fraction=holdout_fraction,
        )
        self.save_hyperparameters()
        if scale not in (2, 3, 4):
            raise ValueError(f"Invalid scale: {scale} (must be 2, 3 or 4)")
        for name, value in (("patch_size", patch_size), ("val_crop_size", val_crop_size)):
            if value < scale or value % scale:
                raise ValueError(f"Invalid {name}: {value} (must be a positive multiple of scale {scale})")
        if repeat < 1:
            raise ValueError(f"Invalid repeat: {repeat} (must be >= 1)")
        if val_mode not in ("full", "center_crop"):
            raise ValueError(f"Invalid val_mode: {val_mode!r} (must be full or center_crop)")
        if val_mode == "full" and val_batch_size != 1:
            raise ValueError(
                f"Invalid val_batch_size: {val_batch_size} (val_mode='full' needs 1: DIV2K images differ in size; "
                "use val_mode='center_crop' to batch)"
            )
        self.scale, self.patch_size, self.repeat = scale, patch_size, repeat
        self.val_mode, self.val_crop_size = val_mode, val_crop_size
        self.cache_dir = None if cache_dir is None else str(Path(cache_dir).expanduser())

    @classmethod
    def layout_help(cls) -> str:
        return f"{_LAYOUT}."

    def _check_root(self, root: Path) -> None:
        for split in ("train", "valid"):
            if not (root / f"DIV2K_{split}_HR").is_dir():
                raise DatasetLayoutError(f"HR folder {root / f'DIV2K_{split}_HR'} is missing; expected {_LAYOUT}")

    def _pairs(self, root: Path, split: Literal["train", "val"]) -> list[tuple[str, str | None]]:
        source = _FOLDER[self._source_split(split)]
        hr_dir = root / f"DIV2K_{source}_HR"
        lr_dir = root / f"DIV2K_{source}_LR_bicubic" / f"X{self.scale}"
        if not hr_dir.is_dir():
            raise DatasetLayoutError(f"HR folder {hr_dir} is missing; expected {_LAYOUT}")
        with os.scandir(hr_dir) as entries:
            hr_files = sorted(e.path for e in entries if e.is_file() and e.name.lower().endswith(".png"))
        if not hr_files:
            raise DatasetLayoutError(f"HR folder {hr_dir} holds no PNG images; expected {_LAYOUT}")
        has_lr = lr_dir.is_dir()
        if not has_lr:
            warnings.warn(
                f"LR folder {lr_dir} is missing: LR images are made from HR by PIL bicubic downscaling (x{self.scale}) "
                "on the fly, which is slower and close to, but not bit-identical with, the official MATLAB LR",
                MissingLRWarning,
                stacklevel=3,
            )
        if split == "train":
            min_side = self.patch_size
        else:
            min_side = self.val_crop_size if self.val_mode == "center_crop" else self.scale
        pairs: list[tuple[str, str | None]] = []
        skipped = 0
        for hr in hr_files:
            lr = str(lr_dir / f"{Path(hr).stem}x{self.scale}.png") if has_lr else None
            if lr is not None and not os.path.isfile(lr):
                raise DatasetLayoutError(f"LR image {lr} (for HR {hr}) is missing; expected {_LAYOUT}")
            try:
                self._check_sizes(hr, lr, min_side)
            except CorruptImageError as exc:
                if not self.skip_corrupt:
                    raise
                skipped += 1
                warnings.warn(
                    f"skip_corrupt=True: skipping pair {skipped} of {split}: {exc}", CorruptImageWarning, stacklevel=3
                )
                continue
            pairs.append((hr, lr))
        if not pairs:
            raise DatasetLayoutError(f"no readable image pair in {hr_dir}")
        return self._tuning_samples(pairs, split, root)

    def _check_sizes(self, hr: str, lr: str | None, min_side: int) -> None:
        width, height = image_size(hr)
        s = self.scale
        if width < min_side or height < min_side:
            raise ValueError(f"HR image {hr} is {width}x{height}, smaller than the {min_side}x{min_side} HR crop")
        if lr is None:
            return
        expected = (width // s, height // s)
        if image_size(lr) != expected:
            got = image_size(lr)
            raise ImagePairError(
                f"LR image {lr} is {got[0]}x{got[1]} but HR {hr} is {width}x{height}; at scale {s} the LR image must be "
                f"{expected[0]}x{expected[1]}. Is the LR folder of another scale, or the pair mismatched?"
            )

    def _build(self, root: Path, split: Literal["train", "val"]) -> Dataset:
        pairs = self._pairs(root, split)
        if split == "train":
            transform = PairedPatchTransform(
                "train", self.scale, self.patch_size, backend=self.backend, seed=self._stream_seed("train")
            )
            return PairedImageDataset(
                pairs, self.scale, transform, repeat=self.repeat, skip_corrupt=self.skip_corrupt, cache_dir=self.cache_dir
            )
        if self.val_mode == "full":
            transform = PairedPatchTransform("full", self.scale, backend=self.backend)
        else:
            transform = PairedPatchTransform("center", self.scale, self.val_crop_size, backend=self.backend)
        return PairedImageDataset(
            pairs, self.scale, transform, skip_corrupt=self.skip_corrupt, cache_dir=self.cache_dir
        )

    def _build_probe(self, indices: np.ndarray) -> Dataset:
        """Fixed aligned patches of ``patch_size``: item ``j`` < #images is the centre patch of
        image ``j``; later items (up to ``repeat`` per image) sit at fixed pseudo-random positions."""
        train = self.train_dataset
        assert isinstance(train, PairedImageDataset)
        count = train.num_sources
        items = []
        for j in (int(i) for i in indices):
            if j < count:
                items.append((j, 0.5, 0.5))
            else:
                fy, fx = np.random.default_rng(derive_seed(self.seed, "probe-patch", j)).random(2)
                items.append((j % count, float(fy), float(fx)))
        return FixedPatchDataset(
            train.samples, self.scale, self.patch_size, items, skip_corrupt=self.skip_corrupt, cache_dir=self.cache_dir
        )
