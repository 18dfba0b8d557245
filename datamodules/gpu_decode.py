"""ImageNet training batches decoded and augmented on the GPU.

On the CPU path every DataLoader worker decodes a JPEG (libjpeg-turbo) and runs
RandomResizedCrop + flip + normalise per image: a few hundred images per second per
core (``python -m benchmark.perf input`` measures it), so a ResNet-18 step on an H100
(~12-16k images/s) would need more cores than the GPU machine has. Here the workers only
read the files' bytes; the main process decodes a whole batch at once with nvJPEG
(``torchvision.io.decode_jpeg(..., device="cuda")``) and augments it on the GPU:

    loader = DataLoader(EncodedImages(samples), batch_size=256, num_workers=4,
                        collate_fn=collate_encoded, pin_memory=False)
    augment = GPUTrainAugment(224, device="cuda")
    for data, labels in loader:
        images, labels = augment(data, labels)   # float32 [256, 3, 224, 224] on the GPU

The augmentation is the DataModule's train preset (``ClassificationTransform("train")``):
RandomResizedCrop with torchvision's sampling rule (area fraction ``scale``, log-uniform
aspect ``ratio``, ten attempts, then the centre crop with the ratio clamped), antialiased
bilinear resize, horizontal flip with probability ½, ImageNet mean/std. Crop parameters
are drawn on the host, vectorised over the batch, from the decoded sizes (which nvJPEG
reports without a sync); flip and normalisation are batched. Random state is a
``torch.Generator`` of its own (``seed``), so a run is reproducible. One difference from
the CPU preset: the resized crop stays float (the CPU path rounds it to uint8 before
normalising), a difference below 0.5/255 before normalisation.

Not handled here: the few CMYK JPEGs of ImageNet's train split, which nvJPEG rejects
(decode those on the CPU with :func:`datamodules.images.read_image`, move them to the
device and pass the list to :meth:`GPUTrainAugment.augment`).

Everything runs on CPU tensors too (``device="cpu"``), which is how the tests check it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg, read_file

from .transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["EncodedImages", "GPUTrainAugment", "collate_encoded", "random_resized_crop_params"]


class EncodedImages(Dataset):
    """``(path, label)`` samples to ``(file bytes as a uint8 tensor, label)``: what a worker
    does when the GPU decodes (a read, no decode).

    Args:
        samples: image paths and integer labels (an ImageNet DataModule's
            ``train_dataset.samples``).
    """

    def __init__(self, samples: Sequence[tuple[str, int]]) -> None:
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        return read_file(str(path)), label


def collate_encoded(batch: Sequence[tuple[Tensor, int]]) -> tuple[list[Tensor], Tensor]:
    """Keep the encoded images as a list (their lengths differ); stack the labels."""
    return [data for data, _ in batch], torch.tensor([label for _, label in batch], dtype=torch.long)


def random_resized_crop_params(
    heights: Tensor,
    widths: Tensor,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """``RandomResizedCrop.get_params`` for a whole batch at once, on the host.

    Per image: up to ``attempts`` draws of an area fraction in ``scale`` and a log-uniform
    aspect ratio in ``ratio``; the first crop that fits is kept, at a uniform position.
    If none fits, the centre crop of the image with its aspect ratio clamped to ``ratio``
    (torchvision's fallback).

    Args:
        heights, widths: int64 [N] image sizes.
        scale, ratio: as for ``torchvision.transforms.v2.RandomResizedCrop``.
        generator: random state (default: torch's global one).
        attempts: draws per image before the fallback.

    Returns:
        int64 [N, 4]: ``top, left, height, width`` of each crop.

    Raises:
        ValueError: ``scale`` or ``ratio`` not increasing pairs of positive numbers.
    """
    if not (0 < scale[0] <= scale[1] and 0 < ratio[0] <= ratio[1]):
        raise ValueError(f"Invalid scale {scale} or ratio {ratio} (each must be an increasing pair of positive "
                         "numbers)")  # fmt: skip
    n = heights.numel()
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    area = h_img * w_img * torch.empty(n, attempts, dtype=torch.float64).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(n, attempts, dtype=torch.float64).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round()
    h = torch.sqrt(area / aspect).round()
    fits = (w > 0) & (h > 0) & (w <= w_img) & (h <= h_img)
    first = torch.where(fits.any(1), fits.long().argmax(1), -1)  # the first attempt that fits
    pick = first.clamp(min=0)[:, None]
    h, w = h.gather(1, pick).squeeze(1), w.gather(1, pick).squeeze(1)
    u = torch.rand(n, 2, dtype=torch.float64, generator=generator)
    top = (u[:, 0] * (h_img.squeeze(1) - h + 1)).floor()  # uniform over the valid offsets
    left = (u[:, 1] * (w_img.squeeze(1) - w + 1)).floor()
    # Fallback: the whole image, its aspect ratio clamped into `ratio`, centred.
    H, W = heights.double(), widths.double()
    in_ratio = W / H
    fh = torch.where(in_ratio < ratio[0], (W / ratio[0]).round(), H)
    fw = torch.where(in_ratio > ratio[1], (H * ratio[1]).round(), W)
    fallback = first < 0
    h, w = torch.where(fallback, fh, h), torch.where(fallback, fw, w)
    top = torch.where(fallback, ((H - h) / 2).floor(), top)
    left = torch.where(fallback, ((W - w) / 2).floor(), left)
    return torch.stack([top, left, h, w], 1).long()


class GPUTrainAugment:
    """Decode a batch of JPEGs on ``device`` and apply the ImageNet train preset.

    Args:
        crop_size: output side (224).
        scale, ratio: RandomResizedCrop ranges (the DataModule's ``train_crop_scale`` and
            torchvision's default ratio).
        flip_p: probability of a horizontal flip.
        device: where to decode and augment (``"cuda"``; ``"cpu"`` for tests).
        seed: seed of the augmentation's own generator.
        channels_last: return the batch in channels_last memory format.

    Returns (when called with the encoded images and their labels):
        ``(images, labels)`` on ``device``: float32 [N, 3, crop, crop], normalised.
    """

    def __init__(
        self,
        crop_size: int = 224,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        device: str | torch.device = "cuda",
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if crop_size < 1:
            raise ValueError(f"Invalid crop_size: {crop_size} (must be >= 1)")
        self.crop_size, self.scale, self.ratio, self.flip_p = crop_size, tuple(scale), tuple(ratio), flip_p
        self.device = torch.device(device)
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255

    def decode(self, data: list[Tensor]) -> list[Tensor]:
        """uint8 [3, H, W] images on the device; one batched nvJPEG call on CUDA."""
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)

    def augment(self, images: list[Tensor]) -> Tensor:
        """RandomResizedCrop + flip + normalise a list of decoded uint8 [3, H, W] images."""
        sizes = torch.tensor([img.shape[-2:] for img in images], dtype=torch.int64)
        boxes = random_resized_crop_params(sizes[:, 0], sizes[:, 1], self.scale, self.ratio, self.generator)
        flips = torch.rand(len(images), generator=self.generator) < self.flip_p
        return self.crop_resize_flip_normalize(images, boxes, flips)

    def crop_resize_flip_normalize(self, images: list[Tensor], boxes: Tensor, flips: Tensor) -> Tensor:
        """The deterministic part, for given crops (``[N, 4]`` top, left, height, width)
        and flips (bool [N]): what ``v2.functional.resized_crop`` (antialiased bilinear),
        ``horizontal_flip`` and ``normalize`` give image by image."""
        size = (self.crop_size, self.crop_size)
        out = torch.empty(len(images), 3, *size, device=self.device)
        # One resize per image (crops differ in size); the crop itself is a view.
        for i, (img, (top, left, h, w)) in enumerate(zip(images, boxes.tolist())):
            crop = img[None, :, top : top + h, left : left + w].float()
            out[i] = F.interpolate(crop, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        flips = flips.to(self.device, non_blocking=True).view(-1, 1, 1, 1)
        out = torch.where(flips, out.flip(-1), out)
        out = (out - self._mean) / self._std  # (x/255 - mean)/std with the 255 folded in
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    def __call__(self, data: list[Tensor], labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.augment(self.decode(data)), labels.to(self.device, non_blocking=True)
