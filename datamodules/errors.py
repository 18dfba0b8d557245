"""Exceptions for datasets that are missing, laid out wrongly or damaged.

Every message names the offending path, the layout that was expected there and how to
fix it, so a user on a cluster can act on the first line of the traceback. The classes
also derive from the matching built-in exception, so ``except FileNotFoundError`` (or
``OSError``, ``ValueError``) written elsewhere keeps working.
"""

from __future__ import annotations

__all__ = ["CorruptImageError", "DatasetError", "DatasetLayoutError", "ImagePairError", "TextFileError"]


class DatasetError(Exception):
    """Base class of every data-layer error raised by :mod:`datamodules`."""


class DatasetLayoutError(DatasetError, FileNotFoundError):
    """A file or folder the dataset layout requires is missing or empty."""


class CorruptImageError(DatasetError, OSError):
    """An image file exists but cannot be read or decoded."""


class ImagePairError(DatasetError, ValueError):
    """Two files that belong together disagree (image vs mask, LR vs HR sizes)."""


class TextFileError(DatasetError, ValueError):
    """A text dataset's file is binary or not valid UTF-8."""
