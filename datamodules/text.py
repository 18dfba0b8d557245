"""Byte-level language modelling on one text file: any UTF-8 file, or enwik8.

Byte-level, not character-level: the vocabulary is the 256 byte values, fixed, so
nothing is built from the data, every file (any script, any UTF-8) is modelled the same
way, no character of the validation split can be missing from the training split, and
enwik8's figures are bits per byte by its convention (Hutter prize; Al-Rfou et al.
2019). On ASCII text, such as the embedded Shakespeare, a byte is a character and bits
per byte are bits per character.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .base import ClipbenchDataModule
from .embedded import EMBEDDED, ensure_generated
from .embedded.text import FILE_NAME
from .errors import DatasetLayoutError, TextFileError
from .holdout import DEFAULT_HOLDOUT_FRACTION

__all__ = ["ENWIK8_SPLIT", "ByteWindows", "TextDataModule", "check_text_file", "split_bounds"]

VOCAB_SIZE = 256
ENWIK8 = "enwik8"
#: train, validation and test fractions of enwik8: 90M / 5M / 5M of its 10^8 bytes.
ENWIK8_SPLIT = (0.90, 0.05, 0.05)
_CHUNK = 1 << 20


def check_text_file(path: Path) -> None:
    """Check that ``path`` is a non-empty UTF-8 text file, reading it in 1 MiB chunks.

    Raises:
        DatasetLayoutError: the file is missing, not a file, or empty.
        TextFileError: the file holds a NUL byte (binary) or is not valid UTF-8; the
            message gives the byte offset.
    """
    if not path.exists():
        raise DatasetLayoutError(f"text file {path} does not exist; pass data_dir=/path/to/a/UTF-8/text/file (or the enwik8 file)")
    if not path.is_file():
        raise DatasetLayoutError(f"{path} is not a file; TextDataModule expects {TextDataModule.layout_help()}")
    if path.stat().st_size == 0:
        raise DatasetLayoutError(f"text file {path} is empty; pass a file with text in it")
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            nul = chunk.find(b"\0")
            if nul >= 0:
                raise TextFileError(
                    f"{path} looks binary (a NUL byte at offset {offset + nul}); pass a UTF-8 text file "
                    "(a compressed file must be decompressed first)"
                )
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                raise TextFileError(
                    f"{path} is not valid UTF-8 (byte offset {offset + exc.start}: {exc.reason}); re-encode it, "
                    f"e.g. `iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8.txt`"
                ) from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise TextFileError(f"{path} is not valid UTF-8 (it ends inside a multi-byte character); re-encode it") from None


def split_bounds(num_bytes: int, enwik8: bool, val_fraction: float) -> dict[str, tuple[int, int]]:
    """Byte ranges ``[start, stop)`` of the contiguous splits.

    enwik8: train, val, test = the first 90 %, the next 5 %, the last 5 % (90M/5M/5M).
    Other files: train = the first ``1 - val_fraction``, val = the rest (test = val).
    """
    if enwik8:
        train_end = round(num_bytes * ENWIK8_SPLIT[0])
        val_end = round(num_bytes * (ENWIK8_SPLIT[0] + ENWIK8_SPLIT[1]))
        return {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, num_bytes)}
    train_end = round(num_bytes * (1 - val_fraction))
    return {"train": (0, train_end), "val": (train_end, num_bytes), "test": (train_end, num_bytes)}


class ByteWindows(Dataset):
    """Non-overlapping windows of ``seq_len + 1`` bytes of ``path[start:stop]``.

    Item ``i`` is ``(inputs, targets)``: int64 ``[seq_len]`` tensors, the bytes at
    ``start + i·seq_len + [0, seq_len)`` and the same shifted by one, so over the
    windows every byte but the first is a target exactly once. The file is memory-mapped
    on first access (the dataset pickles to DataLoader workers without its data).

    Raises:
        ValueError: the range holds fewer than ``seq_len + 1`` bytes.
    """

    def __init__(self, path: Path, start: int, stop: int, seq_len: int) -> None:
        self.path, self.start, self.stop, self.seq_len = Path(path), start, stop, seq_len
        self._data: np.ndarray | None = None
        if len(self) < 1:
            raise ValueError(
                f"Invalid seq_len: {seq_len} (the split [{start}, {stop}) of {path} holds {stop - start} bytes, "
                f"fewer than seq_len + 1; lower seq_len or use a longer file)"
            )

    def __len__(self) -> int:
        return max(0, (self.stop - self.start - 1) // self.seq_len)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin = self.start + index * self.seq_len
        window = torch.from_numpy(self._data[begin : begin + self.seq_len + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}


class TextDataModule(ClipbenchDataModule):
    """Contiguous byte sequences of one text file for next-byte prediction.

    ``data_dir`` is a UTF-8 text file (checked: present, non-empty, no NUL byte, valid
    UTF-8), or the enwik8 file (a file named ``enwik8``, or a folder holding one; read
    as bytes, split 90M/5M/5M into train/val/test as in every enwik8 paper). ``None``:
    the embedded Shakespeare corpus (:mod:`datamodules.embedded.text`). The splits are
    contiguous byte ranges (deterministic, no shuffling across the boundary). Training
    draws non-overlapping ``seq_len``-byte windows in an order set by (seed, epoch,
    rank) (:class:`~datamodules.sampler.EpochShuffleSampler`); evaluation reads every
    window of its split once, in order, each window with a fresh context.

    Batches: ``(inputs int64 [B, seq_len], targets int64 [B, seq_len])``.

    Args:
        data_dir: the text file, the enwik8 file or its folder; ``None``: embedded.
        seq_len: bytes per sequence (the model's context).
        val_fraction: share of a plain text file held out for validation (its end).
        batch_size: training sequences per batch (per process under DDP).
        val_batch_size: evaluation sequences per batch.
        num_workers: DataLoader worker processes (0: load in the main process).
        pin_memory: page-locked host memory; ``None``: when CUDA is available.
        persistent_workers: keep workers alive between epochs.
        seed: seeds the training order and the noise-probe subset.
        tune_split: train on the training range minus its last ``holdout_fraction`` and
            evaluate on that held-out end (contiguous, so no sentence is on both sides).
        holdout_fraction: the held-out share of the training range.

    Raises:
        ValueError: a size or fraction is out of range; (in :meth:`setup`) a split
            shorter than one sequence.
        DatasetLayoutError, TextFileError: (in :meth:`prepare_data`/:meth:`setup`) the
            file is missing, empty, binary or not UTF-8.
    """

    task = "language_model"
    embedded = EMBEDDED["text"]
    vocab_size = VOCAB_SIZE

    def __init__(
        self,
        data_dir: str | None = None,
        seq_len: int = 256,
        val_fraction: float = 0.05,
        batch_size: int = 32,
        val_batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        seed: int = 0,
        tune_split: bool = False,
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            batch_size=batch_size,
            val_batch_size=val_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            skip_corrupt=False,
            seed=seed,
            backend="torchvision",  # unused: text has no augmentations
            tune_split=tune_split,
            holdout_fraction=holdout_fraction,
        )
        self.save_hyperparameters()
        if seq_len < 1:
            raise ValueError(f"Invalid seq_len: {seq_len} (must be >= 1)")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"Invalid val_fraction: {val_fraction} (must be in (0, 1))")
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        self.test_dataset: Dataset | None = None

    @classmethod
    def layout_help(cls) -> str:
        return "a UTF-8 text file (data_dir=/path/book.txt), or enwik8 (data_dir=/path/enwik8 or its folder)."

    @property
    def is_enwik8(self) -> bool:
        return self.root is not None and self.root.name == ENWIK8

    def resolve_root(self) -> Path:
        """The text file: the embedded corpus (generated on first use) or ``data_dir``.

        Raises:
            DatasetLayoutError: ``data_dir`` is a folder without an ``enwik8`` file.
        """
        if self.data_dir is None:
            return ensure_generated(self.embedded) / FILE_NAME
        path = Path(self.data_dir).expanduser()
        if path.is_dir():
            if not (path / ENWIK8).is_file():
                raise DatasetLayoutError(
                    f"data_dir {path} is a folder without an {ENWIK8} file; TextDataModule expects {self.layout_help()}"
                )
            path = path / ENWIK8
        return path

    def _check_root(self, root: Path) -> None:
        if root.name == ENWIK8 and root.is_file() and root.stat().st_size > 0:
            return  # enwik8 is modelled as bytes; its cut at 10^8 bytes may split a character
        check_text_file(root)

    def _split(self, split: str) -> ByteWindows:
        bounds = split_bounds(self.root.stat().st_size, self.is_enwik8, self.val_fraction)
        start, stop = bounds[split]
        if self.tune_split and split in ("train", "val"):
            # The held-out part of a text is its training range's last `holdout_fraction`,
            # contiguous: neighbouring windows continue one text, so a per-window hash would put
            # the two halves of a sentence on both sides.
            train_start, train_stop = bounds["train"]
            cut = train_stop - round((train_stop - train_start) * self.holdout_fraction)
            if cut - train_start <= self.seq_len or train_stop - cut <= self.seq_len:
                raise ValueError(
                    f"Invalid holdout_fraction: {self.holdout_fraction} of {train_stop - train_start} training bytes "
                    f"leaves a side shorter than one sequence of {self.seq_len}; use a larger text or another fraction"
                )
            start, stop = (train_start, cut) if split == "train" else (cut, train_stop)
        return ByteWindows(self.root, start, stop, self.seq_len)

    def _build(self, root: Path, split: Literal["train", "val"]) -> Dataset:
        return self._split(split)

    def _build_probe(self, indices: np.ndarray) -> Dataset:
        return Subset(self.train_dataset, indices.tolist())

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage in (None, "test") and self.test_dataset is None:
            self.test_dataset = self._split("test")

    def test_dataloader(self) -> DataLoader:
        """enwik8's test split (its last 5M bytes); for other files the validation split."""
        if self.test_dataset is None:
            self.setup("test")
        return self._eval_loader(self.test_dataset)
