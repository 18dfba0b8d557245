"""Pascal VOC 2012 semantic segmentation, optionally with SBD-augmented training ids."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import ClipbenchDataModule
from .datasets import SegmentationDataset
from .embedded import EMBEDDED
from .embedded.voc import VOC_CLASSES
from .errors import DatasetLayoutError
from .holdout import DEFAULT_HOLDOUT_FRACTION
from .transforms import Backend, SegmentationTransform

__all__ = ["VOCDataModule", "pad_collate"]

log = logging.getLogger(__name__)

_LAYOUT = (
    "<root>/VOCdevkit/VOC2012/ with JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNGs) and "
    "ImageSets/Segmentation/{train,val}.txt (root may also be the VOCdevkit or VOC2012 folder itself)"
)


def pad_collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch images of different sizes: pad bottom/right, images with 0, masks with ``ignore_index``.

    0 is the mean colour after normalisation; padded mask pixels are ignored by the loss
    and the metrics, so full-image evaluation with batches > 1 scores the same as batch 1.

    Args:
        batch: ``(image [3, H_i, W_i], mask [H_i, W_i])`` pairs.
        ignore_index: mask padding value.

    Returns:
        ``(images float32 [B, 3, H, W], masks int64 [B, H, W])`` with ``H, W`` the maxima.
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = batch[0][0].new_zeros((len(batch), 3, height, width))
    masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


def _read_ids(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise DatasetLayoutError(
            f"{what} {path} cannot be read ({exc.strerror or exc}); expected a text file with one image id "
            f"(e.g. 2007_000032) per line. Layout: {_LAYOUT}"
        ) from exc
    ids = list(dict.fromkeys(line.split()[0] for line in text.splitlines() if line.strip()))
    if not ids:
        raise DatasetLayoutError(f"{what} {path} lists no image id; expected one id per line")
    return ids


def _listing(folder: Path) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries}
    except OSError as exc:
        raise DatasetLayoutError(f"folder {folder} is missing or unreadable; expected {_LAYOUT}") from exc


class VOCDataModule(ClipbenchDataModule):
    """Pascal VOC 2012 segmentation: 21 classes (0 = background), 255 = void/ignore.

    Training: random rescale by a factor in ``scale_range``, pad to ``crop_size`` (image
    with the mean colour, mask with 255), random ``crop_size`` crop, horizontal flip.
    Validation: full images, batch 1 by default; a larger ``val_batch_size`` pads with 255
    (:func:`pad_collate`), which the metrics ignore.

    Batches: ``(images float32 [B, 3, H, W] normalised, masks int64 [B, H, W])``.

    SBD augmentation (the usual "train_aug", 10582 images): ``sbd_train_list`` is a text
    file of extra training ids (absolute, or relative to the VOC2012 folder). Their images
    live in ``JPEGImages/`` and their masks in ``SegmentationClassAug/<id>.png`` (the
    index-PNG conversion of SBD's ``cls/*.mat`` that DeepLab popularised), falling back
    to ``SegmentationClass/``. Ids of the val list are dropped from training (SBD's own
    train split overlaps VOC val) and duplicates are merged.

    Args:
        data_dir: the folder holding ``VOCdevkit/`` (or ``VOCdevkit``/``VOC2012`` itself);
            ``None``: the embedded VOC-like dataset (150 train + 40 val, ~96-136 px).
        crop_size: training crop side (and the probe's).
        scale_range: random rescale factor range.
        sbd_train_list: extra training ids (SBD), see above.
        batch_size: training batch size per process.
        val_batch_size: evaluation batch size (>1 pads with 255).
        num_workers: DataLoader worker processes.
        pin_memory: ``None``: when CUDA is available.
        persistent_workers: keep workers between epochs.
        skip_corrupt: skip undecodable images/masks with a warning instead of raising.
        seed: augmentation / shuffling / probe-subset seed.
        backend: ``"torchvision"`` or ``"albumentations"`` (see the README's measurement).
        tune_split: train on the training split minus its held-out part and evaluate on
            that part instead of the validation split (hyperparameter tuning).
        holdout_fraction: the held-out share of the training split (stable hash of the
            sample's path; default 10%).

    Raises:
        ValueError: invalid sizes.
        DatasetLayoutError: (in :meth:`setup`) missing root, folder or split list, or an
            image listed without its image file or its mask.
    """

    task = "segmentation"
    embedded = EMBEDDED["voc"]
    num_classes = len(VOC_CLASSES)
    ignore_index = 255
    class_names = VOC_CLASSES

    def __init__(
        self,
        data_dir: str | None = None,
        crop_size: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        sbd_train_list: str | None = None,
        batch_size: int = 16,
        val_batch_size: int = 1,
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
        if crop_size < 1:
            raise ValueError(f"Invalid crop_size: {crop_size} (must be >= 1)")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"Invalid scale_range: {scale_range} (must satisfy 0 < low <= high)")
        self.crop_size, self.scale_range, self.sbd_train_list = crop_size, (lo, hi), sbd_train_list

    @classmethod
    def layout_help(cls) -> str:
        return f"{_LAYOUT}."

    @staticmethod
    def voc_folder(root: Path) -> Path:
        """The ``VOC2012`` folder under ``root`` (``root/VOCdevkit/VOC2012``, ``root/VOC2012`` or ``root``).

        Raises:
            DatasetLayoutError: none of them holds ``JPEGImages``.
        """
        for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
            if (candidate / "JPEGImages").is_dir():
                return candidate
        raise DatasetLayoutError(f"no VOC2012 folder with JPEGImages/ under {root}; expected {_LAYOUT}")

    def _check_root(self, root: Path) -> None:
        voc = self.voc_folder(root)
        for sub in ("SegmentationClass", "ImageSets/Segmentation"):
            if not (voc / sub).is_dir():
                raise DatasetLayoutError(f"folder {voc / sub} is missing; expected {_LAYOUT}")

    def _pairs(self, voc: Path, ids: list[str], list_path: Path, mask_dirs: tuple[str, ...]) -> list[tuple[str, str]]:
        images = _listing(voc / "JPEGImages")
        masks = {d: _listing(voc / d) if (voc / d).is_dir() else set() for d in mask_dirs}
        pairs = []
        for image_id in ids:
            image = voc / "JPEGImages" / f"{image_id}.jpg"
            if image.name not in images:
                raise DatasetLayoutError(f"image {image} (id {image_id} of {list_path}) is missing; expected {_LAYOUT}")
            folder = next((d for d in mask_dirs if f"{image_id}.png" in masks[d]), None)
            if folder is None:
                tried = " or ".join(str(voc / d / f"{image_id}.png") for d in mask_dirs)
                raise DatasetLayoutError(
                    f"image {image} has no mask: {tried} is missing (id {image_id} of {list_path}); every listed id "
                    f"needs an image and a mask. Expected {_LAYOUT}"
                )
            pairs.append((str(image), str(voc / folder / f"{image_id}.png")))
        return pairs

    def _build(self, root: Path, split: Literal["train", "val"]) -> Dataset:
        voc = self.voc_folder(root)
        lists = voc / "ImageSets" / "Segmentation"
        source = self._source_split(split)
        list_path = lists / f"{source}.txt"
        if not list_path.is_file():
            raise DatasetLayoutError(f"split list {list_path} is missing; expected {_LAYOUT}")
        pairs = self._pairs(voc, _read_ids(list_path, "split list"), list_path, ("SegmentationClass",))
        if source == "train" and self.sbd_train_list is not None:
            pairs = self._with_sbd(voc, pairs, lists)
        pairs = self._tuning_samples(pairs, split, root)
        if split == "train":
            transform = SegmentationTransform(
                "train", self.crop_size, scale_range=self.scale_range, ignore_index=self.ignore_index,
                backend=self.backend, seed=self._stream_seed("train"),
            )  # fmt: skip
        else:
            transform = SegmentationTransform("full", backend=self.backend, seed=self._stream_seed("val"))
        return SegmentationDataset(pairs, transform, skip_corrupt=self.skip_corrupt)

    def _with_sbd(self, voc: Path, pairs: list[tuple[str, str]], lists: Path) -> list[tuple[str, str]]:
        assert self.sbd_train_list is not None
        sbd_path = Path(self.sbd_train_list).expanduser()
        if not sbd_path.is_absolute() and not sbd_path.is_file():
            sbd_path = voc / sbd_path
        val_ids = set(_read_ids(lists / "val.txt", "split list")) if (lists / "val.txt").is_file() else set()
        known = {Path(image).stem for image, _ in pairs}
        extra = [i for i in _read_ids(sbd_path, "SBD train list") if i not in known]
        leaking = [i for i in extra if i in val_ids]
        if leaking:
            log.info("sbd_train_list: dropped %d id(s) that belong to the val split", len(leaking))
        extra = [i for i in extra if i not in val_ids]
        pairs = pairs + self._pairs(voc, extra, sbd_path, ("SegmentationClassAug", "SegmentationClass"))
        log.info("training on %d VOC + %d SBD images", len(known), len(extra))
        return pairs

    def _val_collate(self) -> Callable[[list[Any]], Any] | None:
        if self.val_batch_size == 1:
            return None
        return functools.partial(pad_collate, ignore_index=self.ignore_index)

    def _build_probe(self, indices: np.ndarray) -> Dataset:
        """Centre pad/crop at ``crop_size`` (mask padded with 255), no rescaling."""
        train = self.train_dataset
        assert isinstance(train, SegmentationDataset)
        transform = SegmentationTransform(
            "center", self.crop_size, ignore_index=self.ignore_index, backend=self.backend
        )
        return SegmentationDataset([train.samples[i] for i in indices], transform, skip_corrupt=self.skip_corrupt)
