"""The Lightning plumbing of a probe run: progress and timing, quiet logs, W&B closing.

:class:`ProbeMonitor` shows one progress bar per task over every forward/backward pass
and records what the timing report needs; :func:`quiet_lightning` keeps Lightning's
info lines from burying the verdicts; :func:`finish_wandb` closes a task's W&B run.
Used by :mod:`.runner`.
"""

from __future__ import annotations

import logging
import os
import resource
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl

if TYPE_CHECKING:
    from .runner import ProbeSettings

__all__ = ["ProbeMonitor", "cpu_seconds", "finish_wandb", "quiet_lightning"]


class ProbeMonitor(pl.Callback):
    """One progress bar per task over every forward/backward pass (probes and training
    batches), and what the timing report needs: training time, fit time, machine load."""

    def __init__(self, label: str, settings: ProbeSettings, passes_per_probe: int) -> None:
        self.label = label
        self.settings = settings
        self.passes_per_probe = passes_per_probe
        self.bar: Any = None
        self.train_s = 0.0
        self.fit_s = 0.0
        self.loads = [os.getloadavg()[0]]
        self._batch_t0 = self._fit_t0 = 0.0
        self._last_load = time.monotonic()

    def _sample_load(self) -> None:
        now = time.monotonic()
        if now - self._last_load > 5.0:  # a 1-min average: a sample every 5 s is plenty
            self.loads.append(os.getloadavg()[0])
            self._last_load = now

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_t0 = time.monotonic()
        if self.settings.progress and trainer.is_global_zero:
            from tqdm.auto import tqdm

            # Training passes are batches: with gradient accumulation a step takes several.
            train = self.settings.train_steps * trainer.accumulate_grad_batches
            total = self.settings.num_probes * self.passes_per_probe + train
            self.bar = tqdm(total=total, desc=self.label, unit="pass", dynamic_ncols=True, leave=False)

    def on_probe_batch(self, phase: str, done: int, total: int) -> None:
        """The probe's ``on_batch`` hook."""
        self._sample_load()
        if self.bar is not None:
            self.bar.set_postfix_str(f"probe: {'full gradient' if phase == 'full' else 'noise'} {done}/{total}")
            self.bar.update(1)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._batch_t0 = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.train_s += time.monotonic() - self._batch_t0
        self._sample_load()
        if self.bar is not None:
            self.bar.set_postfix_str(f"training: step {trainer.global_step}/{self.settings.train_steps}")
            self.bar.update(1)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fit_s = time.monotonic() - self._fit_t0
        self.loads.append(os.getloadavg()[0])
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def finish_wandb(trainer: pl.Trainer) -> None:
    """Close the task's W&B run: otherwise the next task's logger would resume it."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as err:  # noqa: BLE001 - W&B must never fail the diagnostics
                warnings.warn(f"W&B finish failed ({type(err).__name__}: {err})", stacklevel=1)


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines (devices, seed, tips) would bury the verdicts: warnings only."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric",
                                              "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # Emitted by Lightning's own code at every fit with this torch; nothing to act on.
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            # Lightning's SLURM hint whenever `srun` is installed: a probe run is no SLURM job step.
            warnings.filterwarnings("ignore", message="The `srun` command is available")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def cpu_seconds() -> float:
    """CPU seconds of this process so far, user and system, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
