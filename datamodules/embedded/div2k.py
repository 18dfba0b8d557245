"""The embedded DIV2K-like super-resolution dataset: real photographs, in the DIV2K layout.

Layout (that of the NTIRE 2017 release)::

    <root>/DIV2K_train_HR/0001.png ... 0024.png
    <root>/DIV2K_train_LR_bicubic/X{2,3,4}/0001x{2,3,4}.png ...
    <root>/DIV2K_valid_HR/0801.png ... 0808.png
    <root>/DIV2K_valid_LR_bicubic/X{2,3,4}/0801x{2,3,4}.png ...

The HR images are crops of the photographs that ship inside the scikit-image wheel
(``skimage/data``: read from the installed package, never fetched; the images that
scikit-image downloads on demand are not used) and matplotlib's portrait of Grace
Hopper. Training and validation come from different photographs, so validation measures
generalisation to unseen scenes:

- train (24): the astronaut (NASA), coffee, the stereo motorcycle pair (one scene, both
  views in train), the Hubble deep field, a retina fundus photo, the cameraman, grass,
  gravel, brick, coins, the moon and a cell micrograph (the greyscale ones as three
  equal channels);
- validation (8): Chelsea the cat, the rocket launch, Grace Hopper's portrait and an
  immunohistochemistry micrograph, two disjoint crops each.

Crops are 192-240 px on a side, multiples of 12 so that every scale divides them; large
photos are first shrunk (antialiased) so that a crop holds a scene rather than a few
pixels of one. LR is PIL bicubic (antialiased, like MATLAB ``imresize``, which DIV2K used).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetLayoutError

__all__ = ["NUM_TRAIN", "NUM_VAL", "SCALES", "generate_div2k"]

SCALES = (2, 3, 4)
NUM_TRAIN = 24
NUM_VAL = 8
_SEED = 20240603
# (photo, shrink factor, crop sizes (h, w)); crops are drawn at random positions.
_TRAIN = (
    ("astronaut.png", 1.0, ((240, 240), (216, 240), (228, 204))),
    ("astronaut.png", 0.6, ((240, 240), (192, 240))),
    ("coffee.png", 1.0, ((240, 240), (216, 228), (240, 192))),
    ("coffee.png", 0.7, ((228, 240),)),
    ("motorcycle_left.png", 1.0, ((240, 240), (204, 228))),
    ("motorcycle_right.png", 0.6, ((240, 240),)),
    ("hubble_deep_field.jpg", 0.5, ((240, 240), (216, 240))),
    ("retina.jpg", 0.3, ((240, 240), (228, 228))),
    ("camera.png", 1.0, ((240, 240), (216, 192))),
    ("grass.png", 1.0, ((240, 240),)),
    ("gravel.png", 1.0, ((228, 240),)),
    ("brick.png", 1.0, ((240, 216),)),
    ("coins.png", 1.0, ((240, 240),)),
    ("moon.png", 1.0, ((240, 240),)),
    ("cell.png", 0.5, ((240, 240),)),
)
# (photo, shrink factor, (top, left, h, w) boxes, disjoint within a photo).
_VAL = (
    ("chelsea.png", 1.0, ((30, 0, 240, 216), (30, 228, 240, 216))),
    ("rocket.jpg", 0.8, ((0, 0, 240, 240), (96, 264, 228, 240))),
    ("grace_hopper.jpg", 0.8, ((0, 72, 240, 240), (252, 96, 216, 228))),
    ("immunohistochemistry", 1.0, ((0, 0, 240, 240), (264, 264, 240, 240))),
)


def _photo(name: str) -> np.ndarray:
    """An RGB uint8 array of a photograph shipped inside scikit-image or matplotlib.

    Raises:
        DatasetLayoutError: the package or its file is missing (names the fix).
    """
    try:
        if name == "grace_hopper.jpg":
            import matplotlib.cbook as cbook

            path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        else:
            path = resources.files("skimage") / "data" / ("ihc.png" if name == "immunohistochemistry" else name)
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise DatasetLayoutError(
            f"the embedded DIV2K photographs need {name} from scikit-image (or matplotlib) installed ({exc}); "
            "install them with `pip install scikit-image matplotlib`, or pass data_dir=/path/to/DIV2K"
        ) from None


def _shrink(image: np.ndarray, factor: float) -> np.ndarray:
    if factor == 1:
        return image
    height, width = image.shape[:2]
    size = (round(width * factor), round(height * factor))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=None))


def _crop(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    height, width = size
    y = int(rng.integers(0, image.shape[0] - height + 1))
    x = int(rng.integers(0, image.shape[1] - width + 1))
    return image[y : y + height, x : x + width]


def _sources(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and validation HR images (from disjoint sets of photographs)."""
    train = [_crop(_shrink(_photo(name), f), size, rng) for name, f, sizes in _TRAIN for size in sizes]
    val = []
    for name, factor, boxes in _VAL:
        photo = _shrink(_photo(name), factor)
        for top, left, height, width in boxes:
            assert top + height <= photo.shape[0] and left + width <= photo.shape[1], (name, photo.shape)
            val.append(photo[top : top + height, left : left + width])
    return train, val


def generate_div2k(folder: Path) -> None:
    """Write the embedded DIV2K-like dataset into ``folder`` (deterministic).

    Args:
        folder: an empty folder; the four DIV2K folders are created inside.

    Raises:
        DatasetLayoutError: a photograph's package is not installed.
    """
    train, val = _sources(np.random.default_rng(_SEED))
    assert len(train) == NUM_TRAIN and len(val) == NUM_VAL, (len(train), len(val))
    for split, images, first in (("train", train, 1), ("valid", val, 801)):
        hr_dir = folder / f"DIV2K_{split}_HR"
        hr_dir.mkdir(parents=True)
        for offset, hr in enumerate(images):
            assert hr.shape[0] % 12 == 0 and hr.shape[1] % 12 == 0, hr.shape
            stem = f"{first + offset:04d}"
            hr_image = Image.fromarray(np.ascontiguousarray(hr))
            hr_image.save(hr_dir / f"{stem}.png")
            for scale in SCALES:
                lr_dir = folder / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
                lr_dir.mkdir(parents=True, exist_ok=True)
                size = (hr.shape[1] // scale, hr.shape[0] // scale)
                hr_image.resize(size, Image.Resampling.BICUBIC).save(lr_dir / f"{stem}x{scale}.png")
