"""The embedded ImageNet-like dataset: 10 classes of textured shapes in ImageFolder layout.

Layout (that of the real ILSVRC-2012 train/val folders after the usual val re-sort)::

    <root>/train/n01440764/n01440764_1.JPEG ...
    <root>/val/n01440764/ILSVRC2012_val_00000001.JPEG ...

The class folders carry the real first 10 WordNet ids in sorted order, so class-list
files and the "first N classes" rule behave exactly as on ImageNet. Each class is one
shape with one surface texture and a preferred hue; the hue spread overlaps the
neighbouring classes', objects are placed, scaled and turned at random over a cluttered
background (distractor shapes of every class), and the file is a JPEG. Colour alone
therefore gets a classifier part of the way, shape and texture the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .drawing import SHAPES, TEXTURES, add_noise, background, downsample, hsv, paint_shape, to_uint8

__all__ = ["CLASS_WNIDS", "NUM_TRAIN_PER_CLASS", "NUM_VAL_PER_CLASS", "generate_imagenet"]

# The first 10 ILSVRC-2012 synsets in sorted order (tench, goldfish, great white shark, ...).
CLASS_WNIDS = (
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
    "n01496331", "n01498041", "n01514668", "n01514859", "n01518878",
)  # fmt: skip
NUM_TRAIN_PER_CLASS = 100
NUM_VAL_PER_CLASS = 25
_SUPERSAMPLE = 2
_SEED = 20240601


def _draw(label: int, rng: np.random.Generator) -> np.ndarray:
    width, height = (int(x) for x in rng.integers(64, 89, size=2))
    ss = _SUPERSAMPLE
    canvas = background(height * ss, width * ss, rng, saturation=0.5)
    side = min(width, height) * ss
    for _ in range(int(rng.integers(2, 5))):  # clutter: small shapes of any class
        paint_shape(
            canvas,
            center=(rng.uniform(0, width * ss), rng.uniform(0, height * ss)),
            radius=side * rng.uniform(0.06, 0.13),
            angle=rng.uniform(0, 2 * np.pi),
            shape=SHAPES[rng.integers(len(SHAPES))],
            texture_kind=TEXTURES[rng.integers(len(TEXTURES))],
            colors=(hsv(rng.random(), rng.uniform(0.3, 1), rng.uniform(0.4, 1)), hsv(rng.random(), 0.5, 0.4)),
            freq=rng.uniform(5, 9),
            phase=rng.uniform(0, 2 * np.pi),
            rng=rng,
        )
    radius = side * rng.uniform(0.24, 0.42)
    hue = label / len(CLASS_WNIDS) + rng.normal(0, 0.09)
    bright = hsv(hue, rng.uniform(0.55, 1.0), rng.uniform(0.65, 1.0))
    dark = bright * rng.uniform(0.25, 0.5)
    paint_shape(
        canvas,
        center=(
            rng.uniform(radius * 0.8, width * ss - radius * 0.8),
            rng.uniform(radius * 0.8, height * ss - radius * 0.8),
        ),
        radius=radius,
        angle=rng.uniform(0, 2 * np.pi),
        shape=SHAPES[label],
        texture_kind=TEXTURES[label],
        colors=(bright, dark),
        freq=rng.uniform(6, 10),
        phase=rng.uniform(0, 2 * np.pi),
        rng=rng,
    )
    return to_uint8(add_noise(downsample(canvas, ss), 0.03, rng))


def generate_imagenet(folder: Path) -> None:
    """Write the embedded ImageNet-like dataset into ``folder`` (deterministic).

    Args:
        folder: an empty folder; ``train/`` and ``val/`` are created inside.
    """
    val_counter = 0
    for split, per_class in (("train", NUM_TRAIN_PER_CLASS), ("val", NUM_VAL_PER_CLASS)):
        for label, wnid in enumerate(CLASS_WNIDS):
            class_dir = folder / split / wnid
            class_dir.mkdir(parents=True)
            for i in range(per_class):
                rng = np.random.default_rng((_SEED, split == "val", label, i))
                if split == "train":
                    name = f"{wnid}_{i + 1}.JPEG"
                else:
                    val_counter += 1
                    name = f"ILSVRC2012_val_{val_counter:08d}.JPEG"
                Image.fromarray(_draw(label, rng)).save(class_dir / name, format="JPEG", quality=90)
