"""The embedded DIV2K-like super-resolution dataset, in the DIV2K folder layout.

Layout (that of the NTIRE 2017 release)::

    <root>/DIV2K_train_HR/0001.png ... 0024.png
    <root>/DIV2K_train_LR_bicubic/X{2,3,4}/0001x{2,3,4}.png ...
    <root>/DIV2K_valid_HR/0801.png ... 0808.png
    <root>/DIV2K_valid_LR_bicubic/X{2,3,4}/0801x{2,3,4}.png ...

SR needs natural-image statistics, so the HR images are cut from real pictures that ship
with matplotlib (Grace Hopper's portrait; the Jacksboro fault elevation model rendered
with hill shading under several colour maps and sun angles; an MRI slice) plus "dead
leaves" images (occluding discs with power-law sizes, the classic model of natural-image
edge and spectrum statistics). Training and validation crops come from disjoint regions
of each real picture (the MRI slice is training-only). Bicubic x4 PSNR averages about
24 dB (DIV2K: about 26-28 dB). HR sides are multiples of 12, so every scale divides
them, and LR is PIL bicubic (antialiased, like MATLAB ``imresize``, which DIV2K used).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

from .drawing import add_noise, downsample, hsv, to_uint8

__all__ = ["NUM_TRAIN", "NUM_VAL", "SCALES", "generate_div2k"]

log = logging.getLogger(__name__)

SCALES = (2, 3, 4)
NUM_TRAIN = 24
NUM_VAL = 8
_SEED = 20240603
# (scale factor, HR size) of the training crops from the top of the portrait.
_HOPPER_CROPS = (
    (1.0, (240, 240)), (1.0, (216, 240)), (1.0, (240, 192)), (0.9, (240, 216)),
    (0.9, (228, 204)), (0.9, (192, 240)), (0.8, (216, 216)), (0.8, (204, 228)),
)  # fmt: skip
_MAX_LEAVES = 2500
_SIZES = ((192, 240), (240, 192), (216, 240), (240, 216), (204, 228), (228, 204), (240, 240), (216, 216))


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def _terrain(cmap: str, azimuth: float) -> np.ndarray:
    import matplotlib
    import matplotlib.cbook as cbook
    from matplotlib.colors import LightSource

    dem = cbook.get_sample_data("jacksboro_fault_dem.npz")
    shaded = LightSource(azdeg=azimuth, altdeg=45).shade(
        dem["elevation"].astype(np.float64),
        cmap=matplotlib.colormaps[cmap],
        vert_exag=0.02,
        dx=float(dem["dx"]),
        dy=float(dem["dy"]),
        blend_mode="overlay",
    )
    # Rendered at 1.5x the model's 30 m grid: terrain detail at a photo's density.
    return _resize(to_uint8(shaded[..., :3]), 1.5)


def _mri() -> np.ndarray:
    import matplotlib.cbook as cbook

    with cbook.get_sample_data("s1045.ima.gz") as handle:
        slice_ = np.frombuffer(handle.read(), ">u2").reshape(256, 256).astype(np.float32)
    gray = to_uint8(slice_ / slice_.max())
    return np.repeat(gray[..., None], 3, axis=2)


def _resize(image: np.ndarray, factor: float) -> np.ndarray:
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


def _dead_leaves(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Occluding discs, front to back, radii ~ r^-3 (scale invariance), some with gratings."""
    ss = 2
    height, width = size[0] * ss, size[1] * ss
    canvas = np.zeros((height, width, 3), np.float32)
    covered = np.zeros((height, width), bool)
    rmin, rmax = 4.0 * ss, 100.0 * ss
    base_hue = rng.random()
    for count in range(_MAX_LEAVES):
        if count % 64 == 0 and covered.all():
            break
        u = rng.random()
        radius = (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5
        cx, cy = rng.uniform(-radius, width + radius), rng.uniform(-radius, height + radius)
        x0, x1 = max(int(cx - radius), 0), min(int(cx + radius) + 1, width)
        y0, y1 = max(int(cy - radius), 0), min(int(cy + radius) + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.ogrid[y0:y1, x0:x1]
        inside = ((xx - cx) ** 2 + (yy - cy) ** 2 < radius**2) & ~covered[y0:y1, x0:x1]
        if not inside.any():
            continue
        # Scene palette: hues cluster around a base, as in most photographs.
        color = hsv(base_hue + rng.normal(0, 0.12), rng.beta(1.5, 3), rng.uniform(0.15, 0.95))
        shade = 1 + rng.uniform(-0.25, 0.25) * ((xx - cx) / radius) + 0 * yy
        if rng.random() < 0.3:
            angle, period = rng.uniform(0, np.pi), rng.uniform(3, 12) * ss
            phase = (np.cos(angle) * xx + np.sin(angle) * yy) * (2 * np.pi / period)
            shade = shade * (1 + rng.uniform(0.08, 0.2) * np.sin(phase))
        region = canvas[y0:y1, x0:x1]
        region[inside] = (color * shade[..., None])[inside]
        covered[y0:y1, x0:x1] |= inside
    # The few pixels still uncovered (deep background) get the scene's mean colour.
    canvas[~covered] = canvas[covered].mean(axis=0)
    # A slight blur stands in for a camera's optics (no real edge is a perfect step).
    image = cv2.GaussianBlur(downsample(canvas, ss), (0, 0), 0.6)
    return to_uint8(add_noise(image, 1.5 / 255, rng))


def _sources(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Train and validation HR images (disjoint source regions), before dead leaves."""
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []

    def hopper() -> None:
        photo = _grace_hopper()  # 600 x 512: portrait and flag on top, uniform and medals below
        top, bottom = photo[:384], photo[384:]
        for factor, size in _HOPPER_CROPS:
            train.append(_crop(_resize(top, factor), size, rng))
        scaled = _resize(bottom, 0.9)  # 194 x 461
        val.append(scaled[:192, :216])
        val.append(scaled[:192, -228:])

    def terrain() -> None:
        renders = [_terrain(c, a) for c, a in (("gist_earth", 315), ("terrain", 45), ("copper", 135), ("cividis", 225))]
        for i in range(5):  # 516 x 604 renders: training crops west of column 300, validation east of 376
            left = renders[i % 4][:, :300]
            train.append(_crop(left, ((240, 240), (228, 204), (192, 240), (216, 228), (204, 192))[i], rng))
        val.append(renders[0][:240, -228:])
        val.append(renders[2][-216:, -240:])

    def mri() -> None:  # training only: one slice cannot be split into two natural images
        train.append(_mri()[8:248, 8:248])

    loaders: list[tuple[str, Callable[[], None]]] = [
        ("grace_hopper.jpg", hopper),
        ("jacksboro_fault_dem.npz", terrain),
        ("s1045.ima.gz", mri),
    ]
    for name, load in loaders:
        try:
            load()
        except (OSError, KeyError, ValueError) as exc:
            # matplotlib may drop sample files one day; dead leaves then fill the gap.
            log.warning("matplotlib sample %s unavailable (%s); using synthetic images instead", name, exc)
    return train, val


def generate_div2k(folder: Path) -> None:
    """Write the embedded DIV2K-like dataset into ``folder`` (deterministic).

    Args:
        folder: an empty folder; the four DIV2K folders are created inside.
    """
    rng = np.random.default_rng(_SEED)
    train, val = _sources(rng)
    while len(train) < NUM_TRAIN:
        train.append(_dead_leaves(_SIZES[len(train) % len(_SIZES)], rng))
    while len(val) < NUM_VAL:
        val.append(_dead_leaves(_SIZES[(len(val) + 3) % len(_SIZES)], rng))
    for split, images, first in (("train", train[:NUM_TRAIN], 1), ("valid", val[:NUM_VAL], 801)):
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
