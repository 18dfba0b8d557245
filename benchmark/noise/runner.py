"""One task's noise run: its ``fit``, with the gradient-noise probe before, during and after.

:func:`run_task` builds the task exactly as ``python -m benchmark fit`` would from the
same stacked configs (:class:`~benchmark.lightning_cli.ClipbenchCLI`), with these changes
for a probe run: the trainer's callbacks are the :class:`~benchmark.noise.callback.
GradientNoiseCallback` and a progress/timing monitor (the suite's always-on callbacks
stay; ``trainer.yaml``'s ModelCheckpoint goes), the run stops after
``train_steps`` optimizer steps, and validation, checkpoints and the weight export are
off: the run exists only to move the parameters to where the next probe measures.

``python -m benchmark noise`` (:mod:`benchmark.noise.cli`) calls it once per task.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from benchmark.callbacks.run_summary import dataset_name
from benchmark.lightning_cli import ClipbenchCLI

from .callback import GradientNoiseCallback
from .report import SUMMARIES_FILE
from .summary import NoiseSummary

__all__ = ["ProbeSettings", "TaskOutcome", "run_task"]


@dataclass(frozen=True)
class ProbeSettings:
    """How a task is probed (the command's flags; see ``python -m benchmark noise --help``).

    Attributes:
        train_steps: optimizer steps after the probe at initialisation (0: that probe only).
        probe_every: also probe every this many steps (0: at initialisation and at the end).
        num_batches: K, noise mini-batches per probe.
        num_samples: size of the probe subset; None: ``samples_per_batch`` mini-batches'
            worth, at most the training set.
        samples_per_batch: see ``num_samples``.
        batch_size: noise mini-batch size; None: the task's training batch size.
        sketch_dim, mode, num_bootstrap, seed: as in :class:`GradientNoiseCallback`
            (``seed`` is also the run's ``seed_everything``).
        wandb: the run's W&B mode (``--run.wandb``).
        progress: show a progress bar.
    """

    train_steps: int = 30
    probe_every: int = 0
    num_batches: int = 50
    num_samples: int | None = None
    samples_per_batch: int = 8
    batch_size: int | None = None
    sketch_dim: int = 1000
    mode: str = "train"
    num_bootstrap: int = 200
    seed: int = 0
    wandb: str = "disabled"
    progress: bool = True

    @property
    def num_probes(self) -> int:
        """Probes of a run: at initialisation, every ``probe_every`` steps, and at the end if not yet there."""
        periodic = self.train_steps // self.probe_every if self.probe_every else 0
        at_end = self.train_steps > 0 and (self.probe_every == 0 or self.train_steps % self.probe_every != 0)
        return 1 + periodic + int(at_end)


@dataclass
class TaskOutcome:
    """What one task's run produced.

    Attributes:
        label: the task's name (the table rows, the folder ``<out>/<label>/``).
        summaries: one :class:`NoiseSummary` per probe, in step order.
        settings: what was measured how (configs, model, optimizer, b, S, K, ...).
        timing: seconds: ``total_s``, ``setup_s`` (configs, model, data), ``probes_s``,
            ``training_s``, ``other_s`` (statistics, plots, files) and ``cpu_s`` (the
            process's CPU time, all threads).
        load: the 1-min load average sampled while the task ran (``mean``, ``min``, ``max``):
            on a shared machine it explains slow timings.
        global_zero: False on the other ranks of a DDP run (rank 0 reports).
    """

    label: str
    summaries: list[NoiseSummary] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    load: dict[str, float] = field(default_factory=dict)
    global_zero: bool = True


def fit_args(configs: Sequence[Path], settings: ProbeSettings, extra: Sequence[str] = ()) -> list[str]:
    """The ``fit`` command line of a probe run: the task's stack plus what a probe run changes."""
    argv = ["fit"]
    for path in configs:
        argv += ["--config", str(path)]
    argv += [
        "--seed_everything", str(settings.seed),
        # One step when 0 is asked for: see _StopBeforeFirstStep.
        "--trainer.max_steps", str(max(settings.train_steps, 1)), "--trainer.max_epochs", "-1",
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_checkpointing", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--run.wandb", settings.wandb, "--run_summary.export_weights", "false",
    ]
    return argv + list(extra)


def run_task(
    configs: Sequence[Path],
    out: str | Path,
    settings: ProbeSettings,
    *,
    label: str | None = None,
    extra: Sequence[str] = (),
) -> TaskOutcome:
    """Build a task from its configs, probe it, train it, probe it again.

    Args:
        configs: the stacked LightningCLI config files (``config_stack(...)``, or custom).
        out: the results folder; the probes' files go into ``out/<label>/``, the
            Lightning run into ``out/<label>/run/``.
        settings: the probe schedule and sizes.
        label: the task's name; default the dataset's (``imagenet``, ``voc``, ``div2k``).
        extra: further ``fit`` arguments (``--data.init_args.data_dir /data``, ...).

    Returns:
        A :class:`TaskOutcome`.

    Raises:
        ValueError: the folder already holds this task's results, the DataModule has no
            probe subset, or the subset does not fit the training set / batch size.
        SystemExit: invalid configs (jsonargparse prints why).
    """
    out = Path(out)
    outcome = TaskOutcome(label or "")
    state: dict[str, Any] = {}
    wall0, cpu0 = time.monotonic(), _cpu_seconds()

    def prepare(model: Any, datamodule: Any) -> tuple[list[pl.Callback], Path]:
        name = label or dataset_name(datamodule) or "task"
        outcome.label = name
        task_dir = out / name
        if (task_dir / SUMMARIES_FILE).exists():
            raise ValueError(f"{task_dir} already holds noise results; pass another --out")
        if not callable(getattr(datamodule, "probe_dataloader", None)):
            raise ValueError(f"{name}: {type(datamodule).__name__} has no probe_dataloader(); the probe needs one")
        b = settings.batch_size or datamodule.batch_size
        # Checked now, seconds into the task, rather than by the first probe.
        datamodule.setup("fit")
        available = len(datamodule.train_dataset)
        s = settings.num_samples or min(settings.samples_per_batch * b, available)
        if s <= b:
            raise ValueError(f"{name}: the probe subset ({s} samples) must exceed the mini-batch size {b}; "
                             "raise --num-samples or lower --batch-size")
        try:
            datamodule.probe_dataloader(s, b)
        except ValueError as err:
            raise ValueError(f"{name}: {err}; lower --num-samples") from None
        monitor = _Monitor(name, settings, passes_per_probe=math.ceil(s / b) + settings.num_batches)
        noise = GradientNoiseCallback(
            settings.probe_every, at_start=True, at_end=True, num_samples=s, batch_size=b,
            num_batches=settings.num_batches, sketch_dim=settings.sketch_dim, mode=settings.mode,
            seed=settings.seed, task=name, output_dir=task_dir, num_bootstrap=settings.num_bootstrap,
            on_batch=monitor.on_probe_batch,
        )
        state.update(monitor=monitor, noise=noise)
        outcome.settings = {
            **{k: v for k, v in asdict(settings).items() if k not in ("progress", "samples_per_batch")},
            "configs": [str(c) for c in configs], "extra": list(extra), "model": type(model).__name__,
            "optimizer": getattr(model, "optimizer_name", None), "optimizer_args": getattr(model, "optimizer_args", None),
            "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "batch_size": b, "num_samples": s, "train_set": available,
        }
        callbacks: list[pl.Callback] = [monitor, noise]  # the monitor first: its bar exists when the probe starts
        if settings.train_steps == 0:
            callbacks.append(_StopBeforeFirstStep())
        return callbacks, task_dir / "run"

    try:
        with _quiet_lightning():
            cli = _NoiseCLI(fit_args(configs, settings, extra), prepare)
    finally:
        if "monitor" in state:
            state["monitor"].close()  # also when the fit failed: leave the terminal clean
    monitor, noise = state["monitor"], state["noise"]
    _finish_wandb(cli.trainer)
    outcome.global_zero = cli.trainer.is_global_zero
    outcome.summaries = sorted(noise.history, key=lambda s: s.step)
    total = time.monotonic() - wall0
    probes = sum(s.time_s for s in outcome.summaries)
    outcome.timing = {
        "total_s": round(total, 1),
        "setup_s": round(total - monitor.fit_s, 1),
        "probes_s": round(probes, 1),
        "training_s": round(monitor.train_s, 1),
        "other_s": round(monitor.fit_s - probes - monitor.train_s, 1),
        "cpu_s": round(_cpu_seconds() - cpu0, 1),
    }
    loads = monitor.loads
    outcome.load = {"mean": round(sum(loads) / len(loads), 2), "min": round(min(loads), 2), "max": round(max(loads), 2)}
    return outcome


# ------------------------------------------------------------------------- helpers
class _NoiseCLI(ClipbenchCLI):
    """ClipbenchCLI running ``fit`` with the probe run's callbacks.

    ``prepare(model, datamodule) -> (callbacks, run_dir)`` runs once both exist, because
    the task's label (the run directory's name) comes from the DataModule.
    """

    def __init__(self, args: list[str], prepare: Any) -> None:
        self._prepare = prepare
        with warnings.catch_warnings():
            # LightningCLI warns when given args while sys.argv has some too: here that is intended.
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().__init__(args=args)  # run=True: the "fit" subcommand parses, builds and fits

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        # Replacing the configured callbacks drops the ModelCheckpoint of trainer.yaml
        # (no checkpoints here); LightningCLI still appends the suite's always-on ones.
        kwargs["callbacks"], run_dir = self._prepare(self.model, self.datamodule)
        # Set before ClipbenchCLI reads it for the loggers; the saved config.yaml shows it.
        self.config[self.subcommand]["run.dir"] = str(run_dir)
        return super().instantiate_trainer(**kwargs)


class _StopBeforeFirstStep(pl.Callback):
    """``train_steps=0``: end the fit right after the probe at initialisation.

    Lightning skips the whole training loop, ``on_train_start`` (where the probe runs)
    included, when ``max_steps`` is 0; so the run is given one step and stopped before
    taking it (``should_stop`` is checked before the first batch is fetched).
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.should_stop = True


class _Monitor(pl.Callback):
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


def _finish_wandb(trainer: pl.Trainer) -> None:
    """Close the task's W&B run: otherwise the next task's logger would resume it."""
    from pytorch_lightning.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            try:
                logger.experiment.finish()
            except Exception as err:  # noqa: BLE001 - W&B must never fail the diagnostics
                warnings.warn(f"W&B finish failed ({type(err).__name__}: {err})", stacklevel=1)


@contextmanager
def _quiet_lightning() -> Iterator[None]:
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


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
