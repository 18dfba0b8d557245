"""The plumbing every clipbench DataModule shares.

:class:`ClipbenchDataModule` resolves the data root (the user's ``data_dir`` or the
embedded dataset, generated on first use), builds DataLoaders with deterministic worker
seeding, hands evaluation a sampler that never duplicates samples under DDP, and offers
:meth:`~ClipbenchDataModule.probe_dataloader`, the fixed training subset the
gradient-noise probe needs. Subclasses provide the layout scan and the datasets.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from .embedded import EmbeddedSpec, ensure_generated
from .errors import DatasetLayoutError
from .holdout import DEFAULT_HOLDOUT_FRACTION, split_holdout, validate_fraction
from .sampler import EpochShuffleSampler, UnpaddedDistributedSampler, derive_seed
from .transforms import Backend

__all__ = ["ClipbenchDataModule", "derive_seed", "seed_worker"]

TaskName = Literal["classification", "segmentation", "super_resolution", "language_model"]


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed every RNG a transform may use, tame OpenCV.

    Training datasets carry ``worker_seed``, set each epoch by
    :class:`~datamodules.sampler.EpochShuffleSampler` from (DataModule seed, rank,
    epoch): the worker's seed is derived from it and the worker id, so a resumed run's
    workers draw the same augmentations as an uninterrupted run's. Other loaders use the
    seed the DataLoader gave the worker (``base_seed + worker_id`` from the loader's
    seeded generator). torch, Python's ``random``, numpy's global RNG and the
    albumentations generators are all seeded from it.
    """
    info = get_worker_info()
    epoch_seed = getattr(info.dataset, "worker_seed", None) if info is not None else None
    if epoch_seed is not None:
        torch.manual_seed(derive_seed(epoch_seed, worker_id))
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    # OpenCV threads inside workers oversubscribe the cores and have caused hangs.
    cv2.setNumThreads(0)
    cv2.ocl.setUseOpenCL(False)
    reseed = getattr(info.dataset, "reseed", None) if info is not None else None
    if reseed is not None:
        reseed(seed)


class ClipbenchDataModule(pl.LightningDataModule):
    """Base class: data root, DataLoaders, seeding, DDP evaluation, noise-probe subset.

    Subclasses set :attr:`task` and :attr:`embedded`, and implement :meth:`_build`,
    :meth:`_build_probe` and optionally :meth:`_check_root` and :meth:`_val_collate`.

    Args:
        data_dir: dataset root; ``None`` uses the embedded dataset, generated on first
            use under ``data/embedded/`` (or ``$CLIPBENCH_DATA_DIR``).
        batch_size: training batch size (per process under DDP).
        val_batch_size: evaluation batch size.
        num_workers: DataLoader worker processes (0: load in the main process).
        pin_memory: page-locked host memory; ``None``: when CUDA is available.
        persistent_workers: keep workers alive between epochs (ignored with 0 workers).
        skip_corrupt: skip undecodable images with a warning and a running count
            instead of raising :class:`~datamodules.errors.CorruptImageError`.
        seed: seeds the augmentation streams, the shuffling and the probe subset.
        backend: augmentation library, ``"albumentations"`` or ``"torchvision"``.
        tune_split: train on the training split minus its held-out part and evaluate
            on the held-out part (:mod:`datamodules.holdout`) instead of the validation
            split: what hyperparameter tuning uses, so the reported split is never
            looked at while tuning.
        holdout_fraction: the held-out share of the training split (by a stable hash of
            each sample's path), used only with ``tune_split``.

    Raises:
        ValueError: a size or count argument is out of range.
    """

    task: ClassVar[TaskName]
    embedded: ClassVar[EmbeddedSpec]
    #: Classes predicted by the model (``None`` for super-resolution).
    num_classes: int | None = None
    #: Target value the loss and metrics skip (``None``: no such value).
    ignore_index: int | None = None

    def __init__(
        self,
        *,
        data_dir: str | None,
        batch_size: int,
        val_batch_size: int,
        num_workers: int,
        pin_memory: bool | None,
        persistent_workers: bool,
        skip_corrupt: bool,
        seed: int,
        backend: Backend,
        tune_split: bool = False,
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size)):
            if value < 1:
                raise ValueError(f"Invalid {name}: {value} (must be >= 1)")
        if num_workers < 0:
            raise ValueError(f"Invalid num_workers: {num_workers} (must be >= 0)")
        if backend not in ("albumentations", "torchvision"):
            raise ValueError(f"Invalid backend: {backend!r} (must be albumentations or torchvision)")
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.skip_corrupt = skip_corrupt
        self.seed = seed
        self.backend = backend
        self.tune_split = bool(tune_split)
        self.holdout_fraction = validate_fraction(holdout_fraction)
        self.root: Path | None = None
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    # ----------------------------------------------------------------- subclass hooks
    def _check_root(self, root: Path) -> None:
        """Cheap top-level layout check (run by :meth:`prepare_data`); raise on problems."""

    def _build(self, root: Path, split: Literal["train", "val"]) -> Dataset:  # pragma: no cover - abstract
        """Scan ``split`` under ``root`` and return its dataset (augmented for train)."""
        raise NotImplementedError

    def _build_probe(self, indices: np.ndarray) -> Dataset:  # pragma: no cover - abstract
        """Deterministic, fixed-size dataset of the training samples ``indices``."""
        raise NotImplementedError

    # ------------------------------------------------------------- tuning split
    def _source_split(self, split: Literal["train", "val"]) -> Literal["train", "val"]:
        """The on-disk split a dataset is scanned from: with ``tune_split`` both the
        training and the evaluation set come from the training split."""
        return "train" if self.tune_split else split

    def _tuning_samples(self, samples: list, split: Literal["train", "val"], root: Path, key=lambda s: s[0]) -> list:
        """``samples`` of the training split cut to this split's side of the held-out
        boundary under ``tune_split`` (unchanged otherwise); ``key`` gives a sample's file."""
        if not self.tune_split:
            return samples
        train, held = split_holdout(samples, root, self.holdout_fraction, key)
        return train if split == "train" else held

    def _num_probe_candidates(self) -> int:
        """How many distinct probe samples the training set offers."""
        return len(self.train_dataset)  # type: ignore[arg-type]

    def _val_collate(self) -> Callable[[list[Any]], Any] | None:
        """Collate function of the evaluation loader (``None``: the default)."""
        return None

    # ----------------------------------------------------------------------- rank info
    @property
    def _global_rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    @property
    def _world_size(self) -> int:
        return self.trainer.world_size if self.trainer is not None else 1

    def _stream_seed(self, stream: str) -> int:
        return derive_seed(self.seed, self._global_rank, stream)

    # ------------------------------------------------------------------- data hooks
    def resolve_root(self) -> Path:
        """The dataset root, generating the embedded dataset first if ``data_dir`` is None.

        Returns:
            The root folder.

        Raises:
            DatasetLayoutError: ``data_dir`` does not exist or is not a folder.
        """
        if self.data_dir is None:
            return ensure_generated(self.embedded)
        root = Path(self.data_dir).expanduser()
        if not root.is_dir():
            raise DatasetLayoutError(
                f"data_dir {root} does not exist or is not a folder. {type(self).__name__} expects "
                f"{self.layout_help()} Pass data_dir=None to use the embedded dataset instead."
            )
        return root

    @classmethod
    def layout_help(cls) -> str:
        """One sentence describing the expected on-disk layout (used in error messages)."""
        return "the dataset's standard layout."

    def prepare_data(self) -> None:
        """Generate the embedded dataset if needed, or check the top level of ``data_dir``.

        Lightning calls this on local rank 0 only; :meth:`setup` repeats the (locked,
        idempotent) generation check, so other ranks and direct callers are safe too.
        """
        self._check_root(self.resolve_root())

    def setup(self, stage: str | None = None) -> None:
        """Scan the layout and build the datasets; idempotent.

        Args:
            stage: ``"fit"`` or ``None`` build train and val; ``"validate"``/``"test"``/
                ``"predict"`` build val only.

        Raises:
            DatasetLayoutError, ImagePairError, CorruptImageError: see the subclass.
        """
        if self.root is None:
            self.root = self.resolve_root()
            self._check_root(self.root)
        if stage in (None, "fit") and self.train_dataset is None:
            self.train_dataset = self._build(self.root, "train")
        if self.val_dataset is None:
            self.val_dataset = self._build(self.root, "val")

    # ------------------------------------------------------------------ dataloaders
    def _pin(self) -> bool:
        return torch.cuda.is_available() if self.pin_memory is None else self.pin_memory

    def _loader(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        generator_seed: int,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        sampler: Any = None,
        persistent: bool = True,
    ) -> DataLoader:
        generator = torch.Generator()
        generator.manual_seed(generator_seed)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            pin_memory=self._pin(),
            drop_last=drop_last,
            worker_init_fn=seed_worker if self.num_workers > 0 else None,
            generator=generator,
            persistent_workers=persistent and self.persistent_workers and self.num_workers > 0,
        )

    def _require(self, split: Literal["train", "val"]) -> Dataset:
        dataset = self.train_dataset if split == "train" else self.val_dataset
        if dataset is None:
            self.setup("fit" if split == "train" else "validate")
            dataset = self.train_dataset if split == "train" else self.val_dataset
        assert dataset is not None
        return dataset

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches; the last partial batch is dropped.

        The order comes from an :class:`~datamodules.sampler.EpochShuffleSampler`, a
        ``DistributedSampler`` that Lightning keeps under DDP.

        Raises:
            ValueError: fewer training samples per process than ``batch_size``.
        """
        dataset = self._require("train")
        per_rank = len(dataset) // self._world_size  # type: ignore[arg-type]
        if per_rank < self.batch_size:
            raise ValueError(
                f"Invalid batch_size: {self.batch_size} (the training set has {per_rank} samples per process, and "
                "the last partial batch is dropped; lower batch_size or use more data)"
            )
        sampler = EpochShuffleSampler(
            dataset, num_replicas=self._world_size, rank=self._global_rank, seed=derive_seed(self.seed, "train")
        )
        # Lightning builds the first epoch's iterator (and workers prefetch from the
        # sampler) before it calls set_epoch; a resumed run must start at its own epoch:
        # the one Lightning will pass to set_epoch (a checkpoint written at validation end
        # counts its epoch as processed, not yet completed).
        if self.trainer is not None:
            sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return self._loader(
            dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            generator_seed=self._stream_seed("train"),
            sampler=sampler,
        )

    def val_dataloader(self) -> DataLoader:
        """Deterministic evaluation batches, each sample exactly once across all ranks."""
        return self._eval_loader(self._require("val"))

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        sampler = None
        if self._world_size > 1:
            sampler = UnpaddedDistributedSampler(dataset, num_replicas=self._world_size, rank=self._global_rank)
        return self._loader(
            dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            drop_last=False,
            generator_seed=self._stream_seed("val"),
            collate_fn=self._val_collate(),
            sampler=sampler,
        )

    def test_dataloader(self) -> DataLoader:
        """The validation split (these benchmarks report on it; the test labels are private)."""
        return self.val_dataloader()

    def probe_dataloader(self, num_samples: int, batch_size: int, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A fixed subset of training samples with deterministic transforms.

        The subset depends only on the DataModule's ``seed`` (not on ``seed`` here), so a
        full-gradient pass (``shuffle=False``) and shuffled mini-batch passes see the same
        samples. Transforms are deterministic and of a fixed spatial size (see the
        subclass), so samples batch together. The loader is not distributed.

        Args:
            num_samples: subset size.
            batch_size: batch size.
            shuffle: shuffle the subset each pass.
            seed: seed of the shuffling.

        Returns:
            A DataLoader over the subset (last batch kept even if partial).

        Raises:
            ValueError: ``num_samples`` or ``batch_size`` < 1, or more samples than the
                training set offers.
        """
        if num_samples < 1 or batch_size < 1:
            raise ValueError(f"Invalid num_samples/batch_size: {num_samples}/{batch_size} (must be >= 1)")
        self._require("train")
        available = self._num_probe_candidates()
        if num_samples > available:
            raise ValueError(f"Invalid num_samples: {num_samples} (the training set offers {available} probe samples)")
        order = np.random.default_rng(derive_seed(self.seed, "probe")).permutation(available)
        dataset = self._build_probe(np.sort(order[:num_samples]))
        return self._loader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=False,
            generator_seed=derive_seed(seed, "probe-shuffle"),
            persistent=False,
        )

    def __repr__(self) -> str:
        source = self.data_dir if self.data_dir is not None else f"embedded ({self.embedded.name})"
        return f"{type(self).__name__}(data_dir={source!r}, task={self.task!r})"

