"""Transform presets of the three tasks, each in an albumentations and a torchvision-v2 version.

Every preset takes what :mod:`datamodules.images` decodes (a uint8 ``[3, H, W]`` tensor,
plus a uint8 ``[H, W]`` mask or a second image) and returns the batch-ready tensors the
DataModules document. The two backends implement the same augmentation, so the faster one
can be picked per pipeline; ``python -m benchmark.perf data --backends`` measures them
and the DataModules default to the winner (see each DataModule's ``backend`` argument).

Random state: the torchvision presets draw from torch's global RNG, which the DataLoader
seeds per worker; albumentations keeps its own generators, so its presets have a
:meth:`reseed` that the DataModules' ``worker_init_fn`` calls.
"""

from __future__ import annotations

import os
from typing import Literal

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations 2.0.8 phones pypi.org on import

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as nnf  # noqa: E402
import torchvision.transforms.v2 as v2  # noqa: E402
import torchvision.transforms.v2.functional as F  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backend",
    "ClassificationTransform",
    "PairedPatchTransform",
    "SegmentationTransform",
    "to_hwc",
]

Backend = Literal["albumentations", "torchvision"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Image padding colour: the mean, i.e. 0 after normalisation.
_MEAN_FILL = tuple(int(round(255 * m)) for m in IMAGENET_MEAN)
_BACKENDS = ("albumentations", "torchvision")


def _check_backend(backend: str) -> None:
    if backend not in _BACKENDS:
        raise ValueError(f"Invalid backend: {backend!r} (must be one of {', '.join(_BACKENDS)})")


def to_hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 ``[3, H, W]`` tensor to the contiguous ``[H, W, 3]`` array OpenCV needs."""
    return np.ascontiguousarray(image.permute(1, 2, 0).numpy())


def _normalize(image: torch.Tensor) -> torch.Tensor:
    return F.normalize(image.float().div_(255), IMAGENET_MEAN, IMAGENET_STD)


class _Seedable:
    """Holds an optional albumentations pipeline and reseeds it."""

    _album: A.Compose | None = None

    def reseed(self, seed: int) -> None:
        """Reseed the albumentations generators (no-op for torchvision, which uses torch's RNG)."""
        if self._album is not None:
            self._album.set_random_seed(seed)


class ClassificationTransform(_Seedable):
    """ImageNet presets: train ``RandomResizedCrop`` + flip, or deterministic resize/crop.

    Args:
        mode: ``"train"``: random resized crop of ``crop_size`` (area fraction ``scale``,
            aspect ratio ``ratio``) and a horizontal flip; ``"resize_crop"``: resize the
            shorter side to ``resize_size``, centre crop ``crop_size``; ``"resize"``:
            resize to ``crop_size x crop_size`` (the reference protocol's plain resize).
        crop_size: output side.
        resize_size: shorter side before the centre crop (``"resize_crop"`` only).
        scale, ratio: ``RandomResizedCrop`` ranges (``"train"`` only).
        backend: ``"albumentations"`` or ``"torchvision"``.
        seed: albumentations seed (torchvision uses torch's RNG).

    Returns (when called on a uint8 ``[3, H, W]`` tensor):
        float32 ``[3, crop_size, crop_size]``, normalised with the ImageNet mean/std.
    """

    def __init__(
        self,
        mode: Literal["train", "resize_crop", "resize"],
        crop_size: int,
        *,
        resize_size: int | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        backend: Backend = "torchvision",
        seed: int | None = None,
    ) -> None:
        _check_backend(backend)
        self.backend = backend
        size = (crop_size, crop_size)
        if mode == "train":
            spatial_a = [
                A.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), area_for_downscale="image"),
                A.HorizontalFlip(p=0.5),
            ]
            spatial_t = [
                v2.RandomResizedCrop(size, scale=tuple(scale), ratio=tuple(ratio), antialias=True),
                v2.RandomHorizontalFlip(0.5),
            ]
        elif mode == "resize_crop":
            if resize_size is None or resize_size < crop_size:
                raise ValueError(f"Invalid resize_size: {resize_size} (must be >= crop_size {crop_size})")
            spatial_a = [A.SmallestMaxSize(max_size=resize_size, area_for_downscale="image"), A.CenterCrop(*size)]
            spatial_t = [v2.Resize(resize_size, antialias=True), v2.CenterCrop(size)]
        elif mode == "resize":
            spatial_a = [A.Resize(*size, area_for_downscale="image")]
            spatial_t = [v2.Resize(size, antialias=True)]
        else:
            raise ValueError(f"Invalid mode: {mode!r} (must be train, resize_crop or resize)")
        if backend == "albumentations":
            self._album = A.Compose(
                [*spatial_a, A.Normalize(IMAGENET_MEAN, IMAGENET_STD), ToTensorV2()], strict=True, seed=seed
            )
        else:
            self._tv = v2.Compose(
                [*spatial_t, v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
            )

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self._album is not None:
            return self._album(image=to_hwc(image))["image"]
        return self._tv(image)


class SegmentationTransform(_Seedable):
    """VOC presets: joint image+mask augmentation, masks padded with 255 (ignored).

    Args:
        mode: ``"train"``: random rescale by a factor in ``scale_range`` (image
            bilinear, antialiased; mask nearest), pad bottom/right to ``crop_size`` (image
            with the mean colour, mask with ``ignore_index``; as the torchvision reference
            does), random ``crop_size`` crop, horizontal flip;
            ``"center"``: centre pad/crop to ``crop_size`` without rescaling (the
            deterministic probe preset); ``"full"``: the whole image, normalised only.
        crop_size: output side (``"train"``, ``"center"``).
        scale_range: rescale factor range (``"train"``).
        ignore_index: mask padding value.
        backend: ``"albumentations"`` or ``"torchvision"``.
        seed: albumentations seed.

    Returns (when called on uint8 ``[3, H, W]`` and uint8 ``[H, W]``):
        ``(image float32 [3, h, w] normalised, mask int64 [h, w])``.
    """

    def __init__(
        self,
        mode: Literal["train", "center", "full"],
        crop_size: int = 0,
        *,
        scale_range: tuple[float, float] = (0.5, 2.0),
        ignore_index: int = 255,
        backend: Backend = "torchvision",
        seed: int | None = None,
    ) -> None:
        _check_backend(backend)
        if mode not in ("train", "center", "full"):
            raise ValueError(f"Invalid mode: {mode!r} (must be train, center or full)")
        if mode != "full" and crop_size <= 0:
            raise ValueError(f"Invalid crop_size: {crop_size} (must be > 0)")
        lo, hi = scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"Invalid scale_range: {scale_range} (must satisfy 0 < low <= high)")
        self.mode, self.crop_size, self.scale_range = mode, crop_size, (lo, hi)
        self.ignore_index, self.backend = ignore_index, backend
        if backend == "albumentations":
            spatial: list[A.BasicTransform] = []

            def pad(position: str) -> A.PadIfNeeded:
                # 2.x pads masks with 0 (= background) unless told otherwise.
                return A.PadIfNeeded(
                    crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=_MEAN_FILL, fill_mask=ignore_index,
                    position=position,
                )  # fmt: skip

            if mode == "train":
                # RandomScale's default p is 0.5 and its limits are offsets from 1.
                spatial = [
                    A.RandomScale(
                        (lo - 1, hi - 1), interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST_EXACT,
                        area_for_downscale="image", p=1.0,
                    ),
                    pad("top_left"),
                    A.RandomCrop(crop_size, crop_size),
                    A.HorizontalFlip(p=0.5),
                ]  # fmt: skip
            elif mode == "center":
                spatial = [pad("center"), A.CenterCrop(crop_size, crop_size)]
            self._album = A.Compose(
                [*spatial, A.Normalize(IMAGENET_MEAN, IMAGENET_STD), ToTensorV2()], strict=True, seed=seed
            )

    def _pad(self, image: torch.Tensor, mask: torch.Tensor, center: bool) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = mask.shape
        ph, pw = max(self.crop_size - height, 0), max(self.crop_size - width, 0)
        if not (ph or pw):
            return image, mask
        top, left = (ph // 2, pw // 2) if center else (0, 0)
        pads = (left, pw - left, top, ph - top)
        padded = torch.stack([nnf.pad(image[c], pads, value=_MEAN_FILL[c]) for c in range(3)])
        return padded, nnf.pad(mask, pads, value=self.ignore_index)

    def _torchvision(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        crop = self.crop_size
        if self.mode == "train":
            factor = float(torch.empty(()).uniform_(*self.scale_range))
            size = [max(1, int(mask.shape[0] * factor + 0.5)), max(1, int(mask.shape[1] * factor + 0.5))]
            image = F.resize(image, size, antialias=True)
            mask = F.resize(mask[None], size, interpolation=v2.InterpolationMode.NEAREST_EXACT)[0]
            image, mask = self._pad(image, mask, center=False)
            y = int(torch.randint(0, mask.shape[0] - crop + 1, ()))
            x = int(torch.randint(0, mask.shape[1] - crop + 1, ()))
            image, mask = image[:, y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]
            if torch.rand(()) < 0.5:
                image, mask = F.horizontal_flip(image), F.horizontal_flip(mask)
        elif self.mode == "center":
            image, mask = self._pad(image, mask, center=True)
            image, mask = F.center_crop(image, [crop, crop]), F.center_crop(mask[None], [crop, crop])[0]
        return _normalize(image), mask.long()

    def __call__(self, image: torch.Tensor, mask: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._album is not None:
            out = self._album(image=to_hwc(image), mask=np.asarray(mask))
            return out["image"], out["mask"].long()
        return self._torchvision(image, torch.as_tensor(np.asarray(mask)))


class PairedPatchTransform(_Seedable):
    """DIV2K presets: aligned LR/HR patches with the 8 flips/rotations (dihedral group D4).

    The crop is done by hand on both images (LR at ``(x, y, p)``, HR at
    ``(s·x, s·y, s·p)``); albumentations 2.0.8 does not document shared transforms across
    resolutions, and only the flips/rotations go through the backend.

    Args:
        mode: ``"train"``: random aligned patch + random D4 element; ``"center"``: the
            centre patch; ``"full"``: the whole images.
        scale: HR/LR size ratio.
        patch_size: HR patch side (multiple of ``scale``).
        backend: ``"albumentations"`` or ``"torchvision"``.
        seed: albumentations seed.

    Returns (when called on uint8 LR ``[3, h, w]`` and HR ``[3, s·h, s·w]``):
        ``(lr float32 [3, p/s, p/s] in [0, 1], hr float32 [3, p, p] in [0, 1])``.

    Raises (when called):
        ValueError: the LR image is smaller than the LR patch.
    """

    def __init__(
        self,
        mode: Literal["train", "center", "full"],
        scale: int,
        patch_size: int = 0,
        *,
        backend: Backend = "torchvision",
        seed: int | None = None,
    ) -> None:
        _check_backend(backend)
        if mode not in ("train", "center", "full"):
            raise ValueError(f"Invalid mode: {mode!r} (must be train, center or full)")
        if mode != "full" and (patch_size <= 0 or patch_size % scale):
            raise ValueError(f"Invalid patch_size: {patch_size} (must be a positive multiple of scale {scale})")
        self.mode, self.scale, self.patch_size, self.backend = mode, scale, patch_size, backend
        if backend == "albumentations" and mode == "train":
            # Shape checks off: LR and HR differ in size by design.
            self._album = A.Compose(
                [A.D4(p=1.0)], additional_targets={"hr": "image"}, is_check_shapes=False, strict=True, seed=seed
            )

    def crop(self, lr: torch.Tensor, hr: torch.Tensor, y: int, x: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The aligned patch whose LR top-left corner is ``(y, x)``."""
        p, s = self.patch_size // self.scale, self.scale
        return lr[:, y : y + p, x : x + p], hr[:, y * s : (y + p) * s, x * s : (x + p) * s]

    def __call__(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.patch_size // self.scale
        height, width = lr.shape[-2:]
        if self.mode != "full" and (height < p or width < p):
            raise ValueError(f"LR image {height}x{width} is smaller than the LR patch {p}x{p}")
        if self.mode == "center":
            lr, hr = self.crop(lr, hr, (height - p) // 2, (width - p) // 2)
        elif self.mode == "train":
            y, x = int(torch.randint(0, height - p + 1, ())), int(torch.randint(0, width - p + 1, ()))
            lr, hr = self.crop(lr, hr, y, x)
            if self._album is not None:
                out = self._album(image=to_hwc(lr), hr=to_hwc(hr))
                lr = torch.from_numpy(np.ascontiguousarray(out["image"])).permute(2, 0, 1)
                hr = torch.from_numpy(np.ascontiguousarray(out["hr"])).permute(2, 0, 1)
            else:
                element = int(torch.randint(0, 8, ()))
                if element & 1:
                    lr, hr = F.horizontal_flip(lr), F.horizontal_flip(hr)
                if element & 2:
                    lr, hr = F.vertical_flip(lr), F.vertical_flip(hr)
                if element & 4:
                    lr, hr = lr.transpose(-1, -2), hr.transpose(-1, -2)
        return lr.float().div_(255).contiguous(), hr.float().div_(255).contiguous()
