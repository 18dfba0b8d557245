"""The table of benchmark tasks: one entry per dataset, read by every part of the runner.

An entry ties a dataset name to its DataModule, its LightningModule, its config folder
(``benchmark/configs/<name>/``), its primary metric and that metric's direction, and the
labels of its row in the benchmark table. The grid (``--datasets``), the report (rows,
best-per-row, units), the run summary (``final.json``'s dataset), ``python -m
benchmark.perf train`` and the embedded datasets (``datamodules.embedded.EMBEDDED``,
keyed by the same names) read it from here. Adding a task is one entry in
:data:`TASKS` plus its DataModule, LightningModule and configs.

Classes are named by dotted path and imported only when asked for
(:meth:`BenchmarkTask.datamodule_class`), so reading the table costs no torch import.

>>> get_task("text").row_labels
('LM', 'Transformer', 'val bpc')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_DIR",
    "TASKS",
    "BenchmarkTask",
    "dataset_names",
    "get_task",
    "run_directory",
    "task_of_datamodule",
    "task_of_module_kind",
]

CONFIG_DIR = Path(__file__).parent / "configs"


def _resolve(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class BenchmarkTask:
    """One benchmark task (a row of the table).

    Attributes:
        name: the dataset name (``--datasets``, run directories, config folder, embedded
            dataset).
        datamodule: dotted path of its ``LightningDataModule``.
        module: dotted path of its ``TaskModule``.
        kind: the module's ``task`` attribute (``final.json``'s ``task``).
        primary_metric: the metric the table reports (``val/top1``).
        higher_is_better: its direction (False for losses and bits per character).
        task_label, model_label, metric_label: the row's Task / Model / Metric cells.
        factor: multiplies the metric into the table's unit (100: a fraction as %).
        digits: decimals of the table's cells.
        baseline: a metric logged beside the primary one that the table shows in its own
            column (SR's bicubic upsampling), or None.
    """

    name: str
    datamodule: str
    module: str
    kind: str
    primary_metric: str
    higher_is_better: bool
    task_label: str
    model_label: str
    metric_label: str
    factor: float = 1.0
    digits: int = 3
    baseline: str | None = None

    @property
    def config_dir(self) -> Path:
        """``benchmark/configs/<name>/``: data, model, per-optimizer and preset fragments."""
        return CONFIG_DIR / self.name

    @property
    def row_labels(self) -> tuple[str, str, str]:
        return self.task_label, self.model_label, self.metric_label

    def datamodule_class(self) -> type:
        return _resolve(self.datamodule)

    def module_class(self) -> type:
        return _resolve(self.module)

    def best(self, values: list[float]) -> float:
        """The best of ``values`` in this metric's direction."""
        return max(values) if self.higher_is_better else min(values)


#: The built-in tasks, in the order of the benchmark table.
TASKS: tuple[BenchmarkTask, ...] = (
    BenchmarkTask("imagenet", "datamodules.ImageNetDataModule", "models.ClassificationTask", "classification",
                  "val/top1", True, "ImCl", "ResNet-18", "Top-1 (%)", factor=100.0, digits=2),
    BenchmarkTask("voc", "datamodules.VOCDataModule", "models.SegmentationTask", "segmentation",
                  "val/miou", True, "SemSeg", "FCN32s + VGG16", "val mIoU"),
    BenchmarkTask("div2k", "datamodules.DIV2KDataModule", "models.SuperResolutionTask", "super_resolution",
                  "val/psnr", True, "SupRes", "SRResNet", "val mPSNR (dB)", digits=2, baseline="val/psnr_bicubic"),
    BenchmarkTask("text", "datamodules.TextDataModule", "models.LanguageModelTask", "language_model",
                  "val/bpc", False, "LM", "Transformer", "val bpc"),
)  # fmt: skip


def dataset_names() -> tuple[str, ...]:
    """The tasks' dataset names, in table order."""
    return tuple(t.name for t in TASKS)


def get_task(name: str) -> BenchmarkTask:
    """The task of dataset ``name``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    for task in TASKS:
        if task.name == name:
            return task
    raise ValueError(f"Unknown task (dataset): {name!r} (valid: {', '.join(dataset_names())})")


def task_of_module_kind(kind: str) -> BenchmarkTask:
    """The task whose LightningModule has ``task == kind`` (``final.json``'s ``task``).

    Raises:
        ValueError: no such task (the message lists the known kinds).
    """
    for task in TASKS:
        if task.kind == kind:
            return task
    raise ValueError(f"Unknown task kind: {kind!r} (valid: {', '.join(t.kind for t in TASKS)})")


def task_of_datamodule(datamodule: Any) -> BenchmarkTask | None:
    """The task whose DataModule ``datamodule`` is an instance of, or None.

    Matched by class (a subclass counts).
    """
    for task in TASKS:
        if isinstance(datamodule, task.datamodule_class()):
            return task
    return None


def run_directory(runs_dir: str | Path, dataset: str, optimizer: str, seed: Any) -> Path:
    """Where one run writes: ``<runs_dir>/<dataset>/<optimizer>/seed<seed>``.

    The one rule of the grid, the SLURM launcher and ``python -m benchmark fit``.
    """
    return Path(runs_dir) / dataset / optimizer / f"seed{seed}"
