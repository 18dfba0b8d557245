"""The held-out tuning split: a fixed fraction of the training set, chosen by a stable hash.

Hyperparameters are tuned on a part of the training set that is never trained on while
tuning and never reported; the validation split stays the reported one. Each sample's id
is its path relative to the dataset root (``/`` separators); the held-out part is the
``round(fraction * n)`` samples (at least one) whose ids have the smallest SHA-256 hashes.
The split depends on the files alone: the same on every machine and in every process, for
every seed and optimizer, and a larger fraction only adds samples to the held-out part.
(Ranking rather than a hash threshold keeps the held-out share exact on the small
embedded datasets, where a threshold could leave it empty.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = ["DEFAULT_HOLDOUT_FRACTION", "holdout_key", "sample_id", "split_holdout", "validate_fraction"]

DEFAULT_HOLDOUT_FRACTION = 0.1
_SALT = b"clipbench-holdout\0"
T = TypeVar("T")


def validate_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float.

    Raises:
        ValueError: not strictly between 0 and 1.
    """
    if not 0 < float(fraction) < 1:
        raise ValueError(f"Invalid holdout_fraction: {fraction!r} (must be in (0, 1), e.g. 0.1 for 10%)")
    return float(fraction)


def sample_id(path: str | Path, root: str | Path) -> str:
    """The id of a sample file: its path relative to ``root``, ``/``-separated.

    Raises:
        ValueError: ``path`` is not under ``root``.
    """
    path, root = Path(path), Path(root)
    try:
        return path.relative_to(root).as_posix()  # the scans build paths from the root: no syscall
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(f"Invalid sample path: {path} is not under the dataset root {root}") from None


def holdout_key(identifier: str) -> int:
    """The 64-bit rank of a sample id in the held-out order (SHA-256, not ``hash()``, which
    Python salts per process)."""
    return int.from_bytes(hashlib.sha256(_SALT + identifier.encode("utf-8")).digest()[:8], "big")


def split_holdout(
    samples: Sequence[T], root: str | Path, fraction: float, key: Callable[[T], str | Path]
) -> tuple[list[T], list[T]]:
    """``(training part, held-out part)`` of ``samples``, each in the input order.

    Args:
        samples: the training split's samples.
        root: the dataset root the ids are relative to.
        fraction: the held-out share (0.1: about 10%).
        key: the sample's file (its first image), from which its id is taken.

    Raises:
        ValueError: ``fraction`` out of range, or nothing would be left to train on.
    """
    validate_fraction(fraction)
    n = len(samples)
    count = max(1, round(fraction * n))
    if count >= n:
        raise ValueError(
            f"Invalid holdout_fraction: {fraction} holds out {count} of {n} samples and leaves none to train on "
            "(use more data or a smaller fraction)"
        )
    keys = [(holdout_key(sample_id(key(s), root)), i) for i, s in enumerate(samples)]
    held_out = {i for _, i in sorted(keys)[:count]}
    train = [s for i, s in enumerate(samples) if i not in held_out]
    held = [s for i, s in enumerate(samples) if i in held_out]
    return train, held
