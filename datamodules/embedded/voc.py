"""The embedded Pascal-VOC-like segmentation dataset, in the VOC 2012 folder layout.

Layout (that of ``VOCtrainval_11-May-2012.tar``, segmentation part)::

    <root>/VOCdevkit/VOC2012/JPEGImages/2007_000032.jpg ...
    <root>/VOCdevkit/VOC2012/SegmentationClass/2007_000032.png ...   (palette PNGs)
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt

Each image shows 1-3 objects over a low-saturation background. Object class ``k``
(1..20) is one shape with one texture and a saturated hue of its own (hue ``(k-1)/20``
with a small spread); objects occlude one another. The mask is the painted region of each
object, written with the real VOC colour palette, with a 255 "void" band of about two
pixels along every object boundary, as the VOC annotators drew it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .drawing import SHAPES, TEXTURES, add_noise, background, downsample, hsv, paint_shape, to_uint8

__all__ = ["NUM_TRAIN", "NUM_VAL", "VOC_CLASSES", "generate_voc", "voc_palette"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
NUM_TRAIN = 150
NUM_VAL = 40
_SUPERSAMPLE = 2
_SEED = 20240602
_VOID = 255


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map (flattened RGB), as in the devkit's ``VOClabelcolormap.m``."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def _class_style(label: int) -> tuple[str, str]:
    # 10 shapes x 10 textures; the stride makes the 20 (shape, texture) pairs distinct.
    return SHAPES[(label - 1) % len(SHAPES)], TEXTURES[(3 * (label - 1) + (label - 1) // 10) % len(TEXTURES)]


def _void_band(labels: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood holds another label: a band straddling each edge."""
    padded = np.pad(labels, 1, mode="edge")
    band = np.zeros(labels.shape, bool)
    height, width = labels.shape
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            band |= padded[dy : dy + height, dx : dx + width] != labels
    return band


def _draw(object_labels: list[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    width, height = int(rng.integers(112, 137)), int(rng.integers(92, 121))
    ss = _SUPERSAMPLE
    canvas = background(height * ss, width * ss, rng, saturation=0.22)
    labels = np.zeros((height * ss, width * ss), np.uint8)
    side = min(width, height) * ss
    for label in object_labels:
        shape, texture_kind = _class_style(label)
        radius = side * rng.uniform(0.2, 0.42)
        bright = hsv((label - 1) / 20 + rng.normal(0, 0.012), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
        painted = paint_shape(
            canvas,
            center=(
                rng.uniform(radius * 0.6, width * ss - radius * 0.6),
                rng.uniform(radius * 0.6, height * ss - radius * 0.6),
            ),
            radius=radius,
            angle=rng.uniform(0, 2 * np.pi),
            shape=shape,
            texture_kind=texture_kind,
            colors=(bright, bright * rng.uniform(0.35, 0.55)),
            freq=rng.uniform(6, 10),
            phase=rng.uniform(0, 2 * np.pi),
            rng=rng,
        )
        labels[painted] = label
    image = to_uint8(add_noise(downsample(canvas, ss), 0.025, rng))
    # Centre sample of each 2x2 block; the void band covers the half-pixel ambiguity.
    mask = labels[ss // 2 :: ss, ss // 2 :: ss][:height, :width].copy()
    mask[_void_band(mask) & (mask.max() > 0)] = _VOID
    return image, mask


def generate_voc(folder: Path) -> None:
    """Write the embedded VOC-like dataset into ``folder`` (deterministic).

    Args:
        folder: an empty folder; ``VOCdevkit/VOC2012/...`` is created inside.
    """
    voc = folder / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    palette = voc_palette()
    order = np.random.default_rng(_SEED).permutation(np.arange(1, len(VOC_CLASSES)).repeat(30))
    cursor = 0
    splits: dict[str, list[str]] = {"train": [], "val": []}
    index = 0
    for split, count in (("train", NUM_TRAIN), ("val", NUM_VAL)):
        for i in range(count):
            rng = np.random.default_rng((_SEED, split == "val", i))
            # Classes are dealt from a shuffled deck so every class appears evenly often.
            num_objects = int(rng.integers(1, 4))
            object_labels = [int(order[(cursor + k) % len(order)]) for k in range(num_objects)]
            cursor += num_objects
            image, mask = _draw(object_labels, rng)
            image_id = f"{2007 + index * 5 // (NUM_TRAIN + NUM_VAL)}_{32 + 7 * index:06d}"
            index += 1
            Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", format="JPEG", quality=90)
            png = Image.fromarray(mask)  # mode "L"; putpalette turns it into "P"
            png.putpalette(palette)
            png.save(voc / "SegmentationClass" / f"{image_id}.png")
            splits[split].append(image_id)
    lists = voc / "ImageSets" / "Segmentation"
    for split, ids in splits.items():
        (lists / f"{split}.txt").write_text("".join(f"{i}\n" for i in sorted(ids)))
    (lists / "trainval.txt").write_text("".join(f"{i}\n" for i in sorted(splits["train"] + splits["val"])))
