"""One task's noise run: its ``fit``, with the gradient-noise probe before, during and after.

:func:`run_task` builds the task exactly as ``python -m benchmark fit`` would from the
same stacked configs (:class:`~benchmark.lightning_cli.ClipbenchCLI`), with these changes
for a probe run: the trainer's callbacks are the :class:`~benchmark.noise.callback.
GradientNoiseCallback` and a progress/timing monitor (the suite's always-on callbacks
stay; ``trainer.yaml``'s ModelCheckpoint goes), the run stops after
``train_steps`` optimizer steps, and validation, checkpoints and the weight export are
off: the run exists only to move the parameters to where the next probe measures.
Every probe point measures the noise at each of the task's noise batch sizes
(:func:`noise_batch_sizes`), on one shared subset of the training set.

``python -m benchmark noise`` (:mod:`benchmark.noise.cli`) calls it once per task.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from benchmark.callbacks.run_summary import dataset_name
from benchmark.lightning_cli import ClipbenchCLI

from .callback import GradientNoiseCallback
from .report import SUMMARIES_FILE
from .run_support import ProbeMonitor, cpu_seconds, finish_wandb, quiet_lightning
from .summary import NoiseSummary

__all__ = ["ProbeSettings", "TaskOutcome", "fit_args", "noise_batch_sizes", "run_task"]


@dataclass(frozen=True)
class ProbeSettings:
    """How a task is probed (the command's flags; see ``python -m benchmark noise --help``).

    Attributes:
        train_steps: optimizer steps after the probe at initialisation (0: that probe only).
        probe_every: also probe every this many steps (0: at initialisation and at the end).
        num_batches: K, noise mini-batches per probe.
        num_samples: size of the probe subset; None: ``samples_per_batch`` mini-batches'
            worth, at most the training set.
        samples_per_batch: see ``num_samples`` (counted in mini-batches of the largest
            noise batch size).
        batch_size: a single noise mini-batch size for every task (as ``batch_sizes=(b,)``).
        batch_sizes: the noise mini-batch sizes of every task; None: the task's own
            (:func:`noise_batch_sizes`).
        batch_divisors: the default sizes are the training batch b divided by each of
            these (at least 2): ``(4, 1)`` probes b/4 and b; ``(1,)`` b only.
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
    batch_sizes: tuple[int, ...] | None = None
    batch_divisors: tuple[int, ...] = (4, 1)
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
        summaries: one :class:`NoiseSummary` per probe, by batch size, then step.
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


def noise_batch_sizes(
    train_batch_size: int, settings: ProbeSettings, task_sizes: Sequence[int] | None = None
) -> tuple[int, ...]:
    """The noise batch sizes a task is probed at, ascending.

    In order of precedence: ``settings.batch_sizes`` (``--batch-sizes``), then
    ``settings.batch_size`` (``--batch-size``), then the task's own ``task_sizes`` (a
    :class:`~benchmark.noise.cli.ProbeTarget`'s), then the training batch b divided by
    each of ``settings.batch_divisors``, floored at 2 (a BatchNorm batch needs two
    samples) but never above b. The default ``(4, 1)`` gives b/4 and b: the tails depend
    on the batch size (Panigrahi et al. 2019), and a smaller batch costs less than a
    larger one (K·b samples per probe) on a CPU.

    References:
        Panigrahi, Somani, Goyal, Netrapalli. Non-Gaussianity of stochastic gradient
        noise. arXiv:1910.09626 (2019).
    """
    if settings.batch_sizes:
        sizes = settings.batch_sizes
    elif settings.batch_size:
        sizes = (settings.batch_size,)
    elif task_sizes:
        sizes = tuple(task_sizes)
    else:
        sizes = tuple(min(train_batch_size, max(2, train_batch_size // d)) for d in settings.batch_divisors)
    return tuple(sorted({int(b) for b in sizes}))


def run_task(
    configs: Sequence[Path],
    out: str | Path,
    settings: ProbeSettings,
    *,
    label: str | None = None,
    extra: Sequence[str] = (),
    batch_sizes: Sequence[int] | None = None,
) -> TaskOutcome:
    """Build a task from its configs, probe it, train it, probe it again.

    Args:
        configs: the stacked LightningCLI config files (``config_stack(...)``, or custom).
        out: the results folder; the probes' files go into ``out/<label>/``, the
            Lightning run into ``out/<label>/run/``.
        settings: the probe schedule and sizes.
        label: the task's name; default the dataset's (``imagenet``, ``voc``, ``div2k``).
        extra: further ``fit`` arguments (``--data.init_args.data_dir /data``, ...).
        batch_sizes: the task's own noise batch sizes (see :func:`noise_batch_sizes`).

    Returns:
        A :class:`TaskOutcome`.

    Raises:
        ValueError: the folder already holds this task's results, the DataModule has no
            probe subset, or the subset does not fit the training set / batch size.
        SystemExit: invalid configs (jsonargparse prints why).
    """
    run = _TaskRun(Path(out), settings, configs=configs, label=label, extra=extra, batch_sizes=batch_sizes)
    try:
        with quiet_lightning():
            cli = _NoiseCLI(fit_args(configs, settings, extra), run.prepare)
    finally:
        run.close()  # also when the fit failed: leave the terminal clean
    finish_wandb(cli.trainer)
    return run.finish(cli.trainer)


class _TaskRun:
    """One task's probe run: checked and wired up once its model and data exist, then timed.

    :meth:`prepare` is the hook :class:`_NoiseCLI` calls with the built model and
    DataModule (the task's label comes from the DataModule); :meth:`finish` turns the
    callbacks' records into the :class:`TaskOutcome`.
    """

    def __init__(
        self,
        out: Path,
        settings: ProbeSettings,
        *,
        configs: Sequence[Path],
        label: str | None,
        extra: Sequence[str],
        batch_sizes: Sequence[int] | None,
    ) -> None:
        self.out, self.settings, self.configs, self.extra = out, settings, configs, extra
        self.label, self.batch_sizes = label, batch_sizes
        self.outcome = TaskOutcome(label or "")
        self.monitor: ProbeMonitor | None = None
        self.noise: GradientNoiseCallback | None = None
        self.wall0, self.cpu0 = time.monotonic(), cpu_seconds()

    def prepare(self, model: Any, datamodule: Any) -> tuple[list[pl.Callback], Path]:
        """Check the task, build the probe and monitor callbacks; ``(callbacks, run_dir)``."""
        name = self.label or dataset_name(datamodule) or "task"
        self.outcome.label = name
        task_dir = self.out / name
        if (task_dir / SUMMARIES_FILE).exists():
            raise ValueError(f"{task_dir} already holds noise results; pass another --out")
        sizes, num_samples, available = self._subset(name, datamodule)
        settings = self.settings
        passes = sum(math.ceil(num_samples / b) + settings.num_batches for b in sizes)
        self.monitor = ProbeMonitor(name, settings, passes_per_probe=passes)
        self.noise = GradientNoiseCallback(
            settings.probe_every, at_start=True, at_end=True, num_samples=num_samples, batch_sizes=sizes,
            num_batches=settings.num_batches, sketch_dim=settings.sketch_dim, mode=settings.mode,
            seed=settings.seed, task=name, output_dir=task_dir, num_bootstrap=settings.num_bootstrap,
            on_batch=self.monitor.on_probe_batch,
        )
        self.outcome.settings = {
            **{k: v for k, v in asdict(settings).items()
               if k not in ("progress", "samples_per_batch", "batch_size", "batch_divisors")},
            "configs": [str(c) for c in self.configs], "extra": list(self.extra), "model": type(model).__name__,
            "optimizer": getattr(model, "optimizer_name", None), "optimizer_args": getattr(model, "optimizer_args", None),
            "num_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "batch_sizes": list(sizes), "train_batch_size": datamodule.batch_size, "num_samples": num_samples,
            "train_set": available,
        }
        callbacks: list[pl.Callback] = [self.monitor, self.noise]  # the monitor first: its bar exists when the probe starts
        if settings.train_steps == 0:
            callbacks.append(_StopBeforeFirstStep())
        return callbacks, task_dir / "run"

    def _subset(self, name: str, datamodule: Any) -> tuple[tuple[int, ...], int, int]:
        """The noise batch sizes, the probe subset's size and the training set's, checked now
        (seconds into the task) rather than by the first probe."""
        if not callable(getattr(datamodule, "probe_dataloader", None)):
            raise ValueError(  # noqa: TRY004 - a usage error the command reports, as the others
                f"{name}: {type(datamodule).__name__} has no probe_dataloader(); the probe needs one")
        sizes = noise_batch_sizes(datamodule.batch_size, self.settings, self.batch_sizes)
        largest = sizes[-1]
        datamodule.setup("fit")
        available = len(datamodule.train_dataset)
        s = self.settings.num_samples or min(self.settings.samples_per_batch * largest, available)
        if s <= largest:
            raise ValueError(f"{name}: the probe subset ({s} samples) must exceed the mini-batch size {largest}; "
                             "raise --num-samples or lower --batch-size")
        try:
            datamodule.probe_dataloader(s, largest)
        except ValueError as err:
            raise ValueError(f"{name}: {err}; lower --num-samples") from None
        return sizes, s, available

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.close()

    def finish(self, trainer: pl.Trainer) -> TaskOutcome:
        """The outcome: the summaries by batch size and step, the timing, the machine load."""
        assert self.monitor is not None and self.noise is not None  # prepare() ran: the fit started
        outcome, monitor = self.outcome, self.monitor
        outcome.global_zero = trainer.is_global_zero
        outcome.summaries = sorted(self.noise.history, key=lambda s: (s.batch_size, s.step))
        total = time.monotonic() - self.wall0
        probes = sum(s.time_s for s in outcome.summaries)
        outcome.timing = {
            "total_s": round(total, 1),
            "setup_s": round(total - monitor.fit_s, 1),
            "probes_s": round(probes, 1),
            "training_s": round(monitor.train_s, 1),
            "other_s": round(monitor.fit_s - probes - monitor.train_s, 1),
            "cpu_s": round(cpu_seconds() - self.cpu0, 1),
        }
        loads = monitor.loads
        outcome.load = {"mean": round(sum(loads) / len(loads), 2), "min": round(min(loads), 2),
                        "max": round(max(loads), 2)}
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
