"""``GradientNoiseCallback``: the gradient-noise probe inside a Lightning fit.

Every ``every_n_steps`` optimizer steps (and at the start of training, and optionally
at its end) it runs
:class:`~benchmark.noise.probe.GradientNoiseProbe` on the DataModule's fixed probe subset
(``trainer.datamodule.probe_dataloader(num_samples, batch_size)``), once per noise batch
size, with the module's ``compute_loss`` (or, without one, the loss its
``training_step`` returns), summarises each measurement, and

* logs ``noise/alpha``, ``noise/alpha_low``, ``noise/alpha_high``, ``noise/hill``,
  ``noise/kurtosis``, ``noise/max_median`` (with their Gaussian values), ``noise/time_s``,
  ``noise/batch_size`` ... to every logger of the trainer, at the current global step
  (with several batch sizes under ``noise/b<B>/``, one set per size);
* with a ``WandbLogger``, also a ``wandb.Histogram`` of the norms and the histogram and
  QQ plot as ``wandb.Image`` (never fatal: W&B disabled/offline/missing only warns);
* writes the PNGs and one JSON line per probe (``noise_summaries.jsonl``) into its output
  folder, and at the end of training the table (``noise_table.md``) and the α trajectory
  (``alpha_trajectory.png``). The PNGs are ``<task>_step<s>_{hist,qq}.png``, with several
  batch sizes ``<task>_b<B>_step<s>_{hist,qq}.png``.

It does not disturb training: the probe restores module modes and buffers, never
touches ``p.grad`` and forks the RNG (a test checks that a fit with and without the
callback ends with identical weights). Logging goes through ``logger.log_metrics``
rather than ``pl_module.log`` because the probe also runs in ``on_train_start``, where
``self.log`` is not allowed, and its values are host floats computed once per probe
(no per-step device sync is added). Images are produced on global rank zero only; the
probe itself runs on every rank (its collectives need all of them).

References:
    Simsekli, Sagun, Gürbüzbalaban. ICML 2019 (noise measured during training).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from torch import Tensor, nn

from .plots import plot_alpha_trajectory, save_plots, write_table
from .probe import GradientNoiseProbe
from .report import SUMMARIES_FILE, TABLE_FILE, TRAJECTORY_FILE
from .summary import NoiseSummary, summarize

__all__ = ["GradientNoiseCallback", "loss_function"]


class GradientNoiseCallback(pl.Callback):
    """Measure the tail of the gradient noise periodically during training.

    Args:
        every_n_steps: probe when ``trainer.global_step`` is a positive multiple of this
            (0: only at the start). The reference protocol probes every 5000 steps.
        at_start: also probe in ``on_train_start`` (before the first step: at
            initialisation, or where a resumed run starts).
        at_end: also probe in ``on_train_end`` unless the last probe was at that step
            (so that a run whose length is no multiple of ``every_n_steps`` still gets
            its final point).
        num_samples: size of the fixed subset the full gradient averages.
        batch_size: noise mini-batch size; default the DataModule's ``batch_size`` (the
            per-process training batch, so the noise measured is the optimizer's).
        batch_sizes: several noise mini-batch sizes instead, each probed at every probe
            point (the tails depend on the batch size); excludes ``batch_size``. The
            subset (``num_samples``) is shared and must exceed the largest.
        num_batches: K, noise mini-batches per probe.
        sketch_dim: p of the count sketch the α estimate uses (0: streamed blocks only).
        mode: ``"train"`` or ``"eval"`` forward (see the probe).
        seed: base seed; the probe at step s uses ``seed + s`` for its batch draws, and
            ``seed`` for the sketch, so sketches of different steps are comparable.
        task: the label of the table rows and file names (default: the module's class name).
        output_dir: where PNGs, JSON lines and the table go; default
            ``<trainer.log_dir or default_root_dir>/noise``; ``None`` and
            ``write_files=False`` write nothing.
        write_files: write PNGs/JSON/table at all.
        num_bootstrap: bootstrap replicates of the α interval.
        on_batch: forwarded to :class:`~benchmark.noise.probe.GradientNoiseProbe`
            (``on_batch(phase, done, total)`` after each probe gradient; progress bars).

    Raises:
        ValueError: for an invalid argument.
        MisconfigurationException: at fit start, if the DataModule has no
            ``probe_dataloader``, or the module has no ``compute_loss`` and uses manual
            optimization (its ``training_step`` steps the optimizers itself).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        *,
        at_start: bool = True,
        at_end: bool = False,
        num_samples: int = 1024,
        batch_size: int | None = None,
        batch_sizes: Sequence[int] | None = None,
        num_batches: int = 50,
        sketch_dim: int = 1000,
        mode: str = "train",
        seed: int = 0,
        task: str | None = None,
        output_dir: str | Path | None = None,
        write_files: bool = True,
        num_bootstrap: int = 200,
        on_batch: Callable[[str, int, int], None] | None = None,
    ) -> None:
        if every_n_steps < 0:
            raise ValueError(f"Invalid every_n_steps: {every_n_steps} (must be >= 0)")
        if num_samples < 2:
            raise ValueError(f"Invalid num_samples: {num_samples} (must be >= 2)")
        if batch_sizes is not None:
            if batch_size is not None:
                raise ValueError("Invalid batch_size: pass batch_size or batch_sizes, not both")
            if not batch_sizes or any(int(b) < 1 for b in batch_sizes):
                raise ValueError(f"Invalid batch_sizes: {list(batch_sizes)} (must be a non-empty list of sizes >= 1)")
            batch_sizes = tuple(sorted({int(b) for b in batch_sizes}))
        self.every_n_steps = int(every_n_steps)
        self.at_start = at_start
        self.at_end = at_end
        self.num_samples = int(num_samples)
        self.batch_size = batch_size
        self.batch_sizes = batch_sizes
        self.num_batches = int(num_batches)
        self.sketch_dim = int(sketch_dim)
        self.mode = mode
        self.seed = int(seed)
        self.task = task
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.write_files = write_files
        self.num_bootstrap = int(num_bootstrap)
        self.on_batch = on_batch
        self.history: list[NoiseSummary] = []
        self._last_step: int | None = None
        # Fail at construction, not at the first probe hours into a run: the probe
        # validates its own arguments (the module is a placeholder, never called).
        for b in batch_sizes or (batch_size,):
            GradientNoiseProbe(nn.Module(), _never_called, num_batches=num_batches, batch_size=b,
                               sketch_dim=sketch_dim, mode=mode)

    # ---------------------------------------------------------------- hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not callable(getattr(trainer.datamodule, "probe_dataloader", None)):
            raise MisconfigurationException(
                "GradientNoiseCallback needs a DataModule with probe_dataloader(num_samples, batch_size, "
                "shuffle=False, seed=0); pass one to trainer.fit(datamodule=...)"
            )
        if not callable(getattr(pl_module, "compute_loss", None)) and not pl_module.automatic_optimization:
            raise MisconfigurationException(
                f"GradientNoiseCallback needs {type(pl_module).__name__}.compute_loss(batch) -> Tensor: with "
                "manual optimization its training_step steps the optimizers and cannot serve as the loss"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_start:
            self._probe(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        # With gradient accumulation this hook runs several times per step: probe once.
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self._probe(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end and trainer.global_step != self._last_step:
            self._probe(trainer, pl_module)  # every rank, as in the other hooks
        out = self._out_dir(trainer)
        if out is None or not trainer.is_global_zero or not self.history:
            return
        # Per-probe PNGs and JSON lines were written as the probes ran.
        write_table(sorted(self.history, key=lambda r: (r.batch_size, r.step)), out / TABLE_FILE)
        plot_alpha_trajectory(self.history, out / TRAJECTORY_FILE)

    # -------------------------------------------------------------- helpers
    def _out_dir(self, trainer: pl.Trainer) -> Path | None:
        if not self.write_files:
            return None
        if self.output_dir is not None:
            return self.output_dir
        return Path(trainer.log_dir or trainer.default_root_dir) / "noise"

    def _sizes(self, trainer: pl.Trainer) -> tuple[int, ...]:
        """The noise batch sizes of this run (``batch_sizes``, else one: ``batch_size`` or the DataModule's)."""
        if self.batch_sizes:
            return self.batch_sizes
        batch_size = self.batch_size or getattr(trainer.datamodule, "batch_size", None)
        if not batch_size:
            raise MisconfigurationException("GradientNoiseCallback: pass batch_size= (the DataModule has none)")
        return (batch_size,)

    def _probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[NoiseSummary]:
        """Probe at every batch size at the current step; the summaries that succeeded."""
        self._last_step = trainer.global_step
        summaries = [self._probe_at(trainer, pl_module, b) for b in self._sizes(trainer)]
        return [s for s in summaries if s is not None]

    def _probe_at(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch_size: int) -> NoiseSummary | None:
        step = trainer.global_step
        loader = trainer.datamodule.probe_dataloader(self.num_samples, batch_size, shuffle=False, seed=self.seed)
        probe = GradientNoiseProbe(
            pl_module,
            loss_function(pl_module),
            num_batches=self.num_batches,
            batch_size=batch_size,
            sketch_dim=self.sketch_dim,
            mode=self.mode,
            seed=self.seed + step,
            sketch_seed=self.seed,
            transfer=lambda batch: _lightning_transfer(pl_module, batch),
            autocast=trainer.precision_plugin.forward_context,
            on_batch=self.on_batch,
        )
        # A non-finite probe gradient (fp16 without the loss scaler) or an exactly zero
        # noise vector skips this probe and training goes on. Both are raised after the
        # gathers, identically on every rank, so no rank is left waiting. Configuration
        # errors (a ValueError from probe.run) are not caught.
        where = f"step {step}" + (f", batch size {batch_size}" if self._tagged else "")
        try:
            result = probe.run(loader)  # every rank: the probe's collectives need all of them
        except FloatingPointError as err:
            rank_zero_warn(f"GradientNoiseCallback: no noise probe at {where}: {err}")
            return None
        try:
            summary = summarize(result, task=self.task or type(pl_module).__name__, step=step,
                                num_bootstrap=self.num_bootstrap, seed=self.seed)
        except ValueError as err:
            rank_zero_warn(f"GradientNoiseCallback: no noise summary at {where}: {err}")
            return None
        self.history.append(summary)
        if trainer.is_global_zero:
            self._report(trainer, summary)
        return summary

    @property
    def _tagged(self) -> bool:
        """Several batch sizes: metric names and file names carry the batch size."""
        return self.batch_sizes is not None and len(self.batch_sizes) > 1

    def _report(self, trainer: pl.Trainer, summary: NoiseSummary) -> None:
        step = trainer.global_step
        prefix = f"noise/b{summary.batch_size}/" if self._tagged else "noise/"
        metrics = summary.metrics(prefix)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        out = self._out_dir(trainer)
        paths = {}
        if out is not None:
            paths = save_plots(summary, out, with_batch_size=self._tagged)
            with open(out / SUMMARIES_FILE, "a", encoding="utf-8") as f:
                f.write(json.dumps(summary.to_dict()) + "\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                _log_wandb(logger, summary, paths, step, prefix)


def _log_wandb(logger: WandbLogger, summary: NoiseSummary, paths: dict[str, Path], step: int, prefix: str) -> None:
    """Histogram and images to W&B; a diagnostic must never stop training, so only warn."""
    try:
        import wandb
    except ImportError:
        return
    try:
        payload: dict[str, Any] = {f"{prefix}norms": wandb.Histogram(summary.norms), "trainer/global_step": step}
        for name, path in paths.items():
            payload[f"{prefix}{name}"] = wandb.Image(str(path))
        logger.experiment.log(payload)
    except Exception as err:  # noqa: BLE001 - offline/disabled/broken W&B must not kill a run
        rank_zero_warn(f"GradientNoiseCallback: W&B logging failed ({type(err).__name__}: {err})")


def _lightning_transfer(pl_module: pl.LightningModule, batch: Any) -> Any:
    """The batch as training_step would get it: the same transfer hooks, same order.

    Lightning's private helpers pick the DataModule's or the module's hook, whichever is
    overridden, exactly as the fit loop does; re-implementing that selection would drift.
    """
    batch = pl_module._on_before_batch_transfer(batch, dataloader_idx=0)
    return pl_module._apply_batch_transfer_handler(batch, dataloader_idx=0)


def loss_function(pl_module: pl.LightningModule) -> Callable[[Any], Tensor]:
    """The probe's ``loss_fn`` for a module: its ``compute_loss``, else what ``training_step`` returns.

    ``compute_loss`` (the suite's modules have one) is preferred: it logs nothing and
    updates no metric. Without it, ``training_step(batch, 0)`` is called with ``self.log``
    and ``self.log_dict`` silenced (logging is not allowed in the hooks the probe runs
    in) and its loss taken (a tensor, or the ``"loss"`` of a dict). Metrics the
    training_step updates are updated by the probe's batches too; give the module a
    ``compute_loss`` when that matters.
    """
    compute_loss = getattr(pl_module, "compute_loss", None)
    if callable(compute_loss):
        return compute_loss

    def from_training_step(batch: Any) -> Tensor:
        with _logging_silenced(pl_module):
            out = pl_module.training_step(batch, 0)
        return out.get("loss") if isinstance(out, Mapping) else out

    return from_training_step


@contextmanager
def _logging_silenced(pl_module: pl.LightningModule) -> Iterator[None]:
    """``self.log``/``self.log_dict`` as no-ops on this instance for the duration."""
    pl_module.log = pl_module.log_dict = _no_log  # type: ignore[method-assign]
    try:
        yield
    finally:
        del pl_module.log, pl_module.log_dict


def _no_log(*args: Any, **kwargs: Any) -> None:
    return None


def _never_called(batch: Any) -> Any:
    raise AssertionError("placeholder loss of the argument check")
