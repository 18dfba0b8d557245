"""LightningDataModules of the benchmark tasks, with embedded default datasets.

>>> from datamodules import ImageNetDataModule, VOCDataModule, DIV2KDataModule, TextDataModule
>>> dm = VOCDataModule()            # data_dir=None: the embedded VOC-like dataset
>>> dm = VOCDataModule("/data/voc")  # the real one: /data/voc/VOCdevkit/VOC2012/...

Every DataModule reads the real on-disk layout; with ``data_dir=None`` it generates a
small dataset in that same layout under ``data/embedded/`` (or ``$CLIPBENCH_DATA_DIR``)
on first use, offline and deterministically, and reads it with the same code.
"""

import os

# Before albumentations is imported anywhere: 2.0.8 checks pypi.org for updates on import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from .base import ClipbenchDataModule  # noqa: E402
from .datasets import CorruptImageWarning  # noqa: E402
from .div2k import DIV2KDataModule, MissingLRWarning  # noqa: E402
from .errors import CorruptImageError, DatasetError, DatasetLayoutError, ImagePairError, TextFileError  # noqa: E402
from .imagenet import ImageNetDataModule  # noqa: E402
from .sampler import UnpaddedDistributedSampler  # noqa: E402
from .text import TextDataModule  # noqa: E402
from .voc import VOCDataModule  # noqa: E402

__all__ = [
    "ClipbenchDataModule",
    "CorruptImageError",
    "CorruptImageWarning",
    "DIV2KDataModule",
    "DatasetError",
    "DatasetLayoutError",
    "ImageNetDataModule",
    "ImagePairError",
    "MissingLRWarning",
    "TextDataModule",
    "TextFileError",
    "UnpaddedDistributedSampler",
    "VOCDataModule",
]
