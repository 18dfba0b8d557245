"""ImageNet subsets (ImageNet-100 and friends) in ImageFolder layout."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from .base import ClipbenchDataModule
from .datasets import ImageClassificationDataset
from .embedded import EMBEDDED
from .embedded.imagenet import CLASS_WNIDS
from .errors import DatasetLayoutError
from .holdout import DEFAULT_HOLDOUT_FRACTION
from .images import IMAGE_EXTENSIONS
from .transforms import Backend, ClassificationTransform

__all__ = ["ImageNetDataModule", "read_class_list"]

_LAYOUT = "an ImageFolder layout: <root>/train/<wnid>/*.JPEG and <root>/val/<wnid>/*.JPEG"


def read_class_list(path: str | Path) -> list[str]:
    """Read a class-list file: one WordNet id per line (first token; ``#`` starts a comment).

    Args:
        path: the file.

    Returns:
        The ids, in file order, without duplicates.

    Raises:
        DatasetLayoutError: the file is missing or names no class.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetLayoutError(
            f"class list {path} cannot be read ({exc.strerror or exc}); expected a text file with one WordNet id "
            "(e.g. n01440764) per line"
        ) from exc
    wnids: list[str] = []
    for line in text.splitlines():
        token = line.split("#", 1)[0].strip().split(maxsplit=1)
        if token and token[0] not in wnids:
            wnids.append(token[0])
    if not wnids:
        raise DatasetLayoutError(f"class list {path} names no class; expected one WordNet id per line")
    return wnids


def _scan_images(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.path for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))


class ImageNetDataModule(ClipbenchDataModule):
    """An ImageNet class subset in ImageFolder layout (``<root>/{train,val}/<wnid>/*.JPEG``).

    The subset is the first ``num_classes`` WordNet ids in sorted order (ImageNet-100 of
    the thesis: 100), or the ids of ``class_list``. Labels follow the sorted id order.

    Batches: ``(images float32 [B, 3, S, S] normalised with the ImageNet mean/std,
    targets int64 [B])``, ``S`` = ``train_crop_size`` (train) or ``val_crop_size`` (val).

    Args:
        data_dir: the ImageFolder root; ``None``: the embedded 10-class dataset (real first
            10 wnids, 100 train + 25 val JPEGs of 64-88 px per class).
        num_classes: take the first N classes; ``None``: 100 on a real dataset, all 10 on
            the embedded one (or the length of ``class_list``).
        class_list: a text file of WordNet ids, one per line, instead of "first N".
        train_crop_size: side of the ``RandomResizedCrop``.
        train_crop_scale: its area-fraction range.
        val_resize_size: shorter side before the validation centre crop.
        val_crop_size: validation crop side.
        val_mode: ``"resize_crop"`` (Resize(256) + CenterCrop(224)) or ``"resize"``
            (the reference protocol's plain Resize((224, 224))).
        batch_size: training batch size per process.
        val_batch_size: evaluation batch size (``None``: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: ``None``: when CUDA is available.
        persistent_workers: keep workers between epochs.
        skip_corrupt: skip undecodable images with a warning instead of raising.
        seed: augmentation / shuffling / probe-subset seed.
        backend: ``"torchvision"`` (measured faster at ImageNet image sizes) or
            ``"albumentations"``.
        tune_split: train on the training split minus its held-out part and evaluate on
            that part instead of the validation split (hyperparameter tuning).
        holdout_fraction: the held-out share of the training split (stable hash of the
            sample's path; default 10%).

    Raises:
        ValueError: inconsistent sizes, or ``num_classes`` disagrees with ``class_list``.
        DatasetLayoutError: ``class_list`` cannot be read (at construction); the layout
            is wrong (in :meth:`setup`: missing root or split, empty class folder, class
            list naming absent classes, fewer classes than asked for).
    """

    task = "classification"
    embedded = EMBEDDED["imagenet"]

    def __init__(
        self,
        data_dir: str | None = None,
        num_classes: int | None = None,
        class_list: str | None = None,
        train_crop_size: int = 224,
        train_crop_scale: tuple[float, float] = (0.08, 1.0),
        val_resize_size: int = 256,
        val_crop_size: int = 224,
        val_mode: Literal["resize_crop", "resize"] = "resize_crop",
        batch_size: int = 32,
        val_batch_size: int | None = None,
        num_workers: int = 4,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        skip_corrupt: bool = False,
        seed: int = 0,
        backend: Backend = "torchvision",
        tune_split: bool = False,
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_batch_size=batch_size if val_batch_size is None else val_batch_size,
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
        for name, value in (("train_crop_size", train_crop_size), ("val_crop_size", val_crop_size)):
            if value < 1:
                raise ValueError(f"Invalid {name}: {value} (must be >= 1)")
        if val_mode not in ("resize_crop", "resize"):
            raise ValueError(f"Invalid val_mode: {val_mode!r} (must be resize_crop or resize)")
        if val_mode == "resize_crop" and val_resize_size < val_crop_size:
            raise ValueError(f"Invalid val_resize_size: {val_resize_size} (must be >= val_crop_size {val_crop_size})")
        lo, hi = train_crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"Invalid train_crop_scale: {train_crop_scale} (must satisfy 0 < low <= high <= 1)")
        self.wanted_classes = read_class_list(class_list) if class_list is not None else None
        if self.wanted_classes is not None:
            if num_classes is not None and num_classes != len(self.wanted_classes):
                raise ValueError(
                    f"Invalid num_classes: {num_classes} (class_list {class_list} names {len(self.wanted_classes)} classes)"
                )
            num_classes = len(self.wanted_classes)
        elif num_classes is None:
            num_classes = 100 if data_dir is not None else len(CLASS_WNIDS)
        if num_classes < 1:
            raise ValueError(f"Invalid num_classes: {num_classes} (must be >= 1)")
        if data_dir is None and num_classes > len(CLASS_WNIDS):
            raise ValueError(
                f"Invalid num_classes: {num_classes} (the embedded dataset, used when data_dir is None, has "
                f"{len(CLASS_WNIDS)} classes; pass num_classes=None or <= {len(CLASS_WNIDS)}, or a data_dir)"
            )
        self.num_classes: int = num_classes
        self.class_list = class_list
        self.train_crop_size, self.train_crop_scale = train_crop_size, (lo, hi)
        self.val_resize_size, self.val_crop_size, self.val_mode = val_resize_size, val_crop_size, val_mode
        self.classes: list[str] | None = None

    @classmethod
    def layout_help(cls) -> str:
        return f"{_LAYOUT}."

    def _check_root(self, root: Path) -> None:
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DatasetLayoutError(
                    f"split folder {root / split} is missing; expected {_LAYOUT}. A flat ILSVRC2012 val folder must "
                    "first be sorted into <wnid> sub-folders (e.g. with the widely used valprep.sh)."
                )

    def _resolve_classes(self, root: Path) -> list[str]:
        train = root / "train"
        with os.scandir(train) as entries:
            available = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
        if self.wanted_classes is not None:
            present = set(available)
            absent = [w for w in self.wanted_classes if w not in present]
            if absent:
                shown = ", ".join(absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
                raise DatasetLayoutError(
                    f"class list {self.class_list} names {len(absent)} class(es) with no folder in {train}: {shown}; "
                    f"expected {_LAYOUT}. Fix the list or the dataset."
                )
            return sorted(self.wanted_classes)
        if len(available) < self.num_classes:
            raise DatasetLayoutError(
                f"{train} holds {len(available)} class folder(s) but num_classes={self.num_classes} asks for the first "
                f"{self.num_classes}; expected {_LAYOUT}. Pass a smaller num_classes or complete the dataset."
            )
        return available[: self.num_classes]

    def _build(self, root: Path, split: Literal["train", "val"]) -> Dataset:
        if self.classes is None:
            self.classes = self._resolve_classes(root)
        samples: list[tuple[str, int]] = []
        source = self._source_split(split)
        for label, wnid in enumerate(self.classes):
            folder = root / source / wnid
            if not folder.is_dir():
                raise DatasetLayoutError(
                    f"class folder {folder} is missing (class {wnid} exists in {root / 'train'}); expected {_LAYOUT}"
                )
            files = _scan_images(folder)
            if not files:
                raise DatasetLayoutError(
                    f"class folder {folder} holds no images (*.JPEG, *.jpg, *.png, ...); expected {_LAYOUT}. "
                    "Restore its images or leave the class out with class_list."
                )
            samples.extend((path, label) for path in files)
        samples = self._tuning_samples(samples, split, root)
        if split == "train":
            transform = ClassificationTransform(
                "train",
                self.train_crop_size,
                scale=self.train_crop_scale,
                backend=self.backend,
                seed=self._stream_seed("train"),
            )
        else:
            transform = ClassificationTransform(
                self.val_mode,
                self.val_crop_size,
                resize_size=self.val_resize_size,
                backend=self.backend,
                seed=self._stream_seed("val"),
            )
        return ImageClassificationDataset(samples, transform, skip_corrupt=self.skip_corrupt)

    def _build_probe(self, indices: np.ndarray) -> Dataset:
        """Resize + centre crop at the train crop size (same resize/crop ratio as validation)."""
        train = self.train_dataset
        assert isinstance(train, ImageClassificationDataset)
        resize = max(self.train_crop_size, round(self.train_crop_size * self.val_resize_size / self.val_crop_size))
        transform = ClassificationTransform(
            "resize_crop", self.train_crop_size, resize_size=resize, backend=self.backend
        )
        subset = [train.samples[i] for i in indices]
        return ImageClassificationDataset(subset, transform, skip_corrupt=self.skip_corrupt)
