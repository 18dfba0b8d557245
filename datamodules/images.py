"""Reading images and masks, with errors that name the file.

Images are decoded with ``torchvision.io`` (libjpeg-turbo / libpng: 30-80% faster than
PIL here and, unlike ``cv2.imread``, it rejects truncated files); files it cannot handle
(CMYK JPEGs, odd PNG variants) are retried with PIL before being declared corrupt.
torchvision 0.29 deprecated its codecs in favour of torchcodec, which is not a
dependency: each call issues a ``DeprecationWarning`` (hidden by Python's default
filters outside ``__main__``, shown by pytest); when a torchvision release drops the
codecs, PIL alone is used.

Masks are read with PIL and never converted, so a palette PNG gives class indices, not
colours (``cv2`` or ``.convert("RGB")`` would give colours).

Large images that are cut into small patches (DIV2K: a 2040x1356 PNG takes ~170 ms to
decode for one 96-pixel patch) can be cached decoded: :func:`read_image` with a
``cache_dir`` stores each image once as an uncompressed ``.npy`` and memory-maps it
afterwards, so a patch then costs a page-cache copy.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

try:
    from torchvision.io import ImageReadMode, decode_image, read_file
except ImportError:  # a torchvision without image codecs
    decode_image = None  # type: ignore[assignment]

from .errors import CorruptImageError

__all__ = ["IMAGE_EXTENSIONS", "cache_path", "image_size", "read_image", "read_mask"]

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")

_FIX = (
    "re-extract it from the dataset archive or delete it, "
    "or pass skip_corrupt=True to skip such files with a warning"
)


def _decode(path: str | Path) -> torch.Tensor:
    first: Exception | None = None
    if decode_image is not None:
        try:
            return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as exc:
            first = exc
    try:
        with Image.open(path) as im:
            array = np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:  # PIL raises SyntaxError on some broken headers
        raise CorruptImageError(f"cannot decode image {path}: {exc or first}; {_FIX}") from exc
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def cache_path(path: str | Path, cache_dir: str | Path) -> Path:
    """Where :func:`read_image` caches ``path``: keyed by its absolute path, size and mtime,
    so an edited or replaced source is never served from a stale cache."""
    stat = os.stat(path)
    key = f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{Path(path).stem}-{digest}.npy"


def read_image(path: str | Path, cache_dir: str | Path | None = None) -> torch.Tensor:
    """Decode an image file to RGB.

    Args:
        path: image file (JPEG, PNG, ...); grey, palette and alpha images become RGB.
        cache_dir: if given, the decoded image is stored there on first read and
            memory-mapped (copy-on-write) on later reads. Concurrent writers (workers,
            ranks) are safe: each writes a private temporary file and renames it.

    Returns:
        uint8 tensor ``[3, H, W]`` (with a cache: backed by the memory map, so slicing
        a patch reads only that patch).

    Raises:
        CorruptImageError: the file is missing, unreadable, truncated or not an image.
    """
    if cache_dir is None:
        return _decode(path)
    try:
        cached = cache_path(path, cache_dir)
    except OSError as exc:
        raise CorruptImageError(f"cannot read image {path}: {exc}; {_FIX}") from exc
    try:
        return torch.from_numpy(np.load(cached, mmap_mode="c"))
    except (OSError, ValueError):  # not cached yet, or a cache file cut short
        pass
    image = _decode(path)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, image.numpy())
    os.replace(tmp, cached)
    return image


def read_mask(path: str | Path) -> np.ndarray:
    """Read a segmentation mask of class indices.

    Args:
        path: a palette (``P``) or greyscale (``L``) PNG whose pixel values are class
            indices (VOC ``SegmentationClass`` or SBD-converted ``SegmentationClassAug``).

    Returns:
        uint8 array ``[H, W]``.

    Raises:
        CorruptImageError: the file cannot be decoded, or it is an RGB (colour-coded)
            mask, whose colours are not class indices.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise CorruptImageError(
                    f"mask {path} has mode {im.mode!r}; expected a palette ('P') or greyscale ('L') PNG "
                    "whose pixel values are class indices (0-20, 255 = void), as in VOC SegmentationClass. "
                    "Convert colour-coded masks to index PNGs first"
                )
            return np.array(im, dtype=np.uint8)
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"cannot decode mask {path}: {exc}; {_FIX}") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """Width and height from the file header (no decoding).

    Args:
        path: image file.

    Returns:
        ``(width, height)``.

    Raises:
        CorruptImageError: the header cannot be read.
    """
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"cannot read the header of image {path}: {exc}; {_FIX}") from exc
