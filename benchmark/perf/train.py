"""``python -m benchmark.perf train``: training throughput under Lightning against a plain loop.

For each task's LightningModule and each optimizer, ``--steps`` optimizer steps run on one
synthetic batch already on the device, twice:

- **Lightning**: ``Trainer.fit`` as a real run has it: the CSV logger at the suite's
  ``log_every_n_steps``, :class:`~benchmark.callbacks.OptimizerStatsCallback` and
  :class:`~benchmark.callbacks.RunSummaryCallback`, the module's own logging and metrics;
  no validation and no checkpoints (they happen per epoch, not per step).
- **plain**: a second instance of the same module (same initial weights), driven by
  ``zero_grad``/``compute_loss``/``backward``/``step`` with the same precision (autocast),
  memory format (``channels_last``), ``torch.compile`` setting and optimizer.

Both exclude ``--warmup`` steps (which include compilation) from the timing, and the
device is synchronised at both ends of the timed window. The table gives images/s of
both and their ratio; on CUDA, ``--sync-check`` adds host synchronisations per step of
both loops (``torch.cuda.set_sync_debug_mode``), and on CPU the count of ops that would
synchronise on a GPU (``.item()``/``bool()``, ``nonzero``, ``unique``, ...), over one
logging interval after the timed window. ``--profile`` prints where the Lightning path
spends host time beyond the plain loop (cProfile).

Why this module is over 400 lines: the plain loop and the Lightning path it is measured
against must stay side by side, step for step, for the comparison to be fair; the
shared timing helpers already live in :mod:`benchmark.perf.common`.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import logging
import pstats
import statistics
import tempfile
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from optim.clipping import device_code_path

from ..tasks import get_task
from .common import machine_info, markdown_table

__all__ = ["TASKS", "PerfWorkload", "add_arguments", "lightning_run", "plain_run", "run"]

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "trainer.yaml"
OPTIMIZERS = ["sgd", "adam", "clipped_sgd", "clipped_sstm"]  # the thesis's four
# Ops that make the host wait for a GPU: .item()/bool()/float() (all through
# _local_scalar_dense) and ops whose output size depends on the data.
SYNC_OPS = ("aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_dim",
            "aten::unique_consecutive", "aten::masked_select", "aten::repeat_interleave")  # fmt: skip
_SYNC_WARNING = "called a synchronizing CUDA operation"


def _classification(batch: int, size: int, device: torch.device, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    images = torch.randn(batch, 3, size, size, generator=gen)
    return images.to(device), torch.randint(0, 100, (batch,), generator=gen).to(device)


def _segmentation(batch: int, size: int, device: torch.device, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    masks = torch.randint(0, 21, (batch, size, size), generator=gen)
    masks[:, :, : size // 10] = 255  # some void pixels, as VOC's borders
    return torch.randn(batch, 3, size, size, generator=gen).to(device), masks.to(device)


def _super_resolution(batch: int, size: int, device: torch.device, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    hr = torch.rand(batch, 3, size, size, generator=gen)
    return torch.nn.functional.avg_pool2d(hr, 4).to(device), hr.to(device)  # (LR, HR), x4


@dataclass(frozen=True)
class PerfWorkload:
    """What to time: a benchmark task's module (by its dataset name in
    :mod:`benchmark.tasks`), how to make its batch, and the (batch, image side) cases.

    ``cuda`` holds the issue's sizes; ``cpu`` tiny ones (with ``cpu_args`` shrinking the
    network) so that the command finishes in a minute or two on a laptop-class CPU.
    """

    task: str
    make_batch: Callable[..., tuple[Tensor, Tensor]]
    cuda: tuple[tuple[int, int], ...]
    cpu: tuple[tuple[int, int], ...]
    args: dict[str, Any] = field(default_factory=dict)
    cpu_args: dict[str, Any] = field(default_factory=dict)
    #: the throughput goal (fraction of the plain loop) the issue sets on CUDA, if any
    target: float | None = None


TASKS: dict[str, PerfWorkload] = {
    "resnet18": PerfWorkload("imagenet", _classification, ((256, 224),), ((8, 64),),
                             {"num_classes": 100, "arch": "resnet18"}, target=0.98),
    "fcn32s": PerfWorkload("voc", _segmentation, ((16, 500),), ((2, 64),), {"num_classes": 21, "arch": "fcn32s"},
                           {"arch_args": {"width": 0.125, "fc_channels": 64}}),
    "srresnet": PerfWorkload("div2k", _super_resolution, ((16, 96), (64, 96)), ((4, 48),),
                             {"scale": 4, "arch": "srresnet"}, {"arch_args": {"num_features": 16, "num_blocks": 2}}),
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options on ``parser``."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--optimizers", nargs="+", default=OPTIMIZERS, help="registry names")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=None,
                        help="default: eager and compiled on CUDA, eager on CPU (inductor compiles for minutes there)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 100 cuda, 6 cpu)")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many (plain, Lightning) pairs")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 10 cuda, 2 cpu)")
    parser.add_argument("--precision", default=None, help="Lightning precision (default: bf16-mixed cuda, 32-true cpu)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--batch-size", type=int, default=None, help="override every case's batch size")
    parser.add_argument("--image-size", type=int, default=None, help="override every case's image side")
    parser.add_argument("--sync-check", action="store_true", help="count host syncs per step of the Lightning path")
    parser.add_argument("--profile", action="store_true", help="print where Lightning spends host time (cProfile)")
    parser.add_argument("--progress-bar", action="store_true", help="keep Lightning's progress bar (as the CLI does)")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_module(task: PerfWorkload, optimizer: str, device: torch.device, compiled: bool, channels_last: bool):
    """A fresh task module (initial weights fixed by ``init_seed``)."""
    args = {**task.args, **(task.cpu_args if device.type == "cpu" else {})}
    return get_task(task.task).module_class()(optimizer=optimizer, channels_last=channels_last, compile=compiled,
                                              init_seed=0, **args)  # fmt: skip


class _Window(pl.Callback):
    """Times batches ``warmup`` .. ``warmup + steps - 1`` from the start of each to the start
    of the next (so each step's logging is inside), the device synchronised at both ends
    of the window. Then, if asked, inspects the next ``inspect`` batches, untimed (both
    tools slow the host down): host syncs (:class:`_SyncCensus`) and a cProfile."""

    def __init__(self, warmup: int, steps: int, inspect: int, census: bool, profile: bool) -> None:
        self.marks = (warmup, warmup + steps, warmup + steps + inspect)
        self.census, self.profile, self.inspect = census, profile, inspect
        self.stamps: list[float] = []
        self.inspect_seconds = 0.0  # main-thread CPU time of the inspected steps
        self._thread_start = 0.0
        self.syncs: float | None = None
        self.profiler: cProfile.Profile | None = None
        self._watch: _SyncCensus | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        first, last, end = self.marks
        if batch_idx in (first, last):
            _sync(pl_module.device)
        if first <= batch_idx <= last:
            self.stamps.append(time.perf_counter())
        if batch_idx == last:
            if self.census:
                self._watch = _SyncCensus(pl_module.device).__enter__()
            if self.profile:
                # The main thread's CPU time: other processes on a shared machine do not
                # inflate it, and Lightning's additions are Python on this thread.
                self.profiler = cProfile.Profile(time.thread_time)
                self.profiler.enable()
            self._thread_start = time.thread_time()
        if batch_idx == end and self.inspect:
            if self.profiler is not None:
                self.profiler.disable()
            if self._watch is not None:
                self._watch.__exit__(None, None, None)
                self.syncs = self._watch.count / self.inspect
            self.inspect_seconds = time.thread_time() - self._thread_start


class _SyncCensus:
    """Counts host-device synchronisations: CUDA's sync debug mode on a GPU; on CPU the
    calls of the ops that would synchronise there (:data:`SYNC_OPS`), seen by a dispatch
    mode (cheap to start, unlike the profiler)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.count = device, 0

    def __enter__(self) -> "_SyncCensus":
        if self.device.type == "cuda":
            self._caught = warnings.catch_warnings(record=True)
            self._records = self._caught.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        else:
            # What a GPU step would synchronise: the kernels' accelerator path, which on
            # CPU tensors they leave for host reads (free there).
            self._device_path = device_code_path()
            self._device_path.__enter__()
            self._mode = _CountOps()
            self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
            self._caught.__exit__(*exc)
            self.count = sum(_SYNC_WARNING in str(w.message) for w in self._records)
        else:
            self._mode.__exit__(*exc)
            self._device_path.__exit__(*exc)
            self.count = self._mode.count


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func._schema.name in SYNC_OPS
        return func(*args, **(kwargs or {}))


def _autocast(device: torch.device, precision: str):
    if precision.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision.startswith("16"):
        raise SystemExit("error: 16-mixed needs a GradScaler; compare with bf16-mixed or 32-true")
    return nullcontext()


def _seconds_per_step(stamps: list[float], device: torch.device) -> float:
    """On CUDA the window's mean (host and device run asynchronously: only the total is
    the device's pace); on CPU, where every op is synchronous, the median step, which a
    machine shared with other work disturbs least."""
    if device.type == "cuda":
        return (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return statistics.median(b - a for a, b in zip(stamps, stamps[1:]))


def plain_run(module, batch, device: torch.device, precision: str, warmup: int, steps: int, census: bool = False,
              inspect: int = 10):  # fmt: skip
    """Seconds for ``steps`` plain-PyTorch steps of ``module``, and with ``census`` the syncs
    per step over ``inspect`` more steps (else None).

    Mirrors what Lightning does before training: ``configure_model`` (channels_last,
    compile), move to the device, ``configure_optimizers``.
    """
    module.configure_model()
    module.to(device).train()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with _autocast(device, precision):
            loss = module.compute_loss(batch)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(device)
    stamps = [time.perf_counter()]
    for _ in range(steps):
        step()
        stamps.append(time.perf_counter())
    _sync(device)
    stamps[-1] = time.perf_counter()
    seconds = _seconds_per_step(stamps, device) * steps
    if not census:
        return seconds, None
    with _SyncCensus(device) as watch:  # untimed: counting slows the host down
        for _ in range(inspect):
            step()
    return seconds, watch.count / inspect


class _Repeat:
    """The same in-memory batch, ``n`` times: a loader that costs nothing."""

    def __init__(self, batch: tuple[Tensor, Tensor], n: int) -> None:
        self.batch, self.n = batch, n

    def __iter__(self):
        return (self.batch for _ in range(self.n))

    def __len__(self) -> int:
        return self.n


def _log_every_n_steps() -> int:
    import yaml

    try:
        return int(yaml.safe_load(CONFIG.read_text())["trainer"]["log_every_n_steps"])
    except (OSError, KeyError, TypeError, ValueError):
        return 10


def lightning_run(module, batch, device: torch.device, precision: str, warmup: int, steps: int, *,
                  census: bool = False, profile: bool = False, progress_bar: bool = False):  # fmt: skip
    """Seconds for ``steps`` steps of ``Trainer.fit``, and the window callback (its
    ``syncs`` per step and ``profiler`` when asked for)."""
    from pytorch_lightning.loggers import CSVLogger

    from benchmark.callbacks import OptimizerStatsCallback, RunSummaryCallback

    # One logging interval inspected, so that its share of the loggers' host reads counts.
    inspect = _log_every_n_steps() if census or profile else 0
    window = _Window(warmup, steps, inspect, census, profile)
    total = warmup + steps + inspect + 1
    with tempfile.TemporaryDirectory(prefix="clipbench-perf-train-") as logdir, _quiet_lightning():
        with warnings.catch_warnings():
            # Expected here: no validation loop, fewer batches than a logging interval, srun unused.
            warnings.filterwarnings("ignore", message=".*(val_dataloader|logging interval|LeafSpec|srun).*")
            trainer = pl.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
                max_steps=total, limit_val_batches=0, num_sanity_val_steps=0, enable_checkpointing=False,
                enable_model_summary=False, enable_progress_bar=progress_bar, default_root_dir=logdir,
                logger=CSVLogger(logdir, name="csv"), log_every_n_steps=_log_every_n_steps(), gradient_clip_val=None,
                callbacks=[OptimizerStatsCallback(), RunSummaryCallback(export_weights=False), window],
                benchmark=torch.backends.cudnn.benchmark,
            )  # fmt: skip
            trainer.fit(module, train_dataloaders=_Repeat(batch, total))
    return _seconds_per_step(window.stamps, device) * steps, window


class _quiet_lightning:
    """Lightning's INFO lines (devices, tips, "stopped: max_steps reached") would interleave
    with the markdown report on stdout."""

    names = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")

    def __enter__(self) -> None:
        self.levels = [(logging.getLogger(n), logging.getLogger(n).level) for n in self.names]
        for logger, _ in self.levels:
            logger.setLevel(logging.WARNING)

    def __exit__(self, *exc: Any) -> None:
        for logger, level in self.levels:
            logger.setLevel(level)


# Host time of a Lightning step, by (path fragment, function): cProfile's inclusive time.
_PROFILED = {
    "closure": ("loops/optimization/automatic.py", "closure"),  # training_step + zero_grad + backward
    "optimizer": ("pytorch_lightning/core/optimizer.py", "step"),  # the optimizer's step, closure included
    "forward": ("models/", "_shared_step"),  # forward + loss
    "backward": ("torch/_tensor.py", "backward"),
    "zero_grad": ("torch/optim/optimizer.py", "zero_grad"),
    "log": ("pytorch_lightning/core/module.py", "log"),
    "log_dict": ("pytorch_lightning/core/module.py", "log_dict"),
    "metrics": ("models/", "_update_metrics"),
    "stats_before": ("benchmark/callbacks/optimizer_stats.py", "on_before_optimizer_step"),
    "stats_after": ("benchmark/callbacks/optimizer_stats.py", "on_train_batch_end"),
    "loggers": ("logger_connector/logger_connector.py", "update_train_step_metrics"),
}


def _host_profile(profiler: cProfile.Profile, steps: int, seconds: float) -> str:
    """Host milliseconds per step: the work the plain loop also does, and what Lightning
    adds (cProfile inflates Python-heavy parts: compare rows with each other)."""
    ms = dict.fromkeys(_PROFILED, 0.0)
    for (file, _, name), (_, _, _, cumulative, _) in pstats.Stats(profiler).stats.items():
        for key, (path, function) in _PROFILED.items():
            if name == function and path in file.replace("\\", "/"):
                ms[key] += cumulative / steps * 1e3
    update = ms["optimizer"] - ms["closure"]
    shared = ms["forward"] + ms["backward"] + ms["zero_grad"] + update
    rows = [
        ["whole step", seconds / steps * 1e3],
        ["as in the plain loop: forward + loss", ms["forward"]],
        ["as in the plain loop: backward", ms["backward"]],
        ["as in the plain loop: optimizer update (step minus closure)", update],
        ["as in the plain loop: zero_grad", ms["zero_grad"]],
        ["**Lightning's additions** (whole step minus the four above)", seconds / steps * 1e3 - shared],
        ["  self.log / self.log_dict", ms["log"] + ms["log_dict"]],
        ["  torchmetrics updates (_update_metrics)", ms["metrics"]],
        ["  OptimizerStatsCallback", ms["stats_before"] + ms["stats_after"]],
        ["  metrics to the loggers (every log_every_n_steps)", ms["loggers"]],
    ]
    return markdown_table(["main-thread CPU time per step (cProfile, inclusive)", "ms"],
                          [[k, f"{v:.2f}"] for k, v in rows])  # fmt: skip


def _cases(args, device: torch.device):
    for name in args.tasks:
        task = TASKS[name]
        for batch, size in task.cuda if device.type == "cuda" else task.cpu:
            yield name, task, args.batch_size or batch, args.image_size or size


def run(args: argparse.Namespace) -> int:
    """Print the throughput table as markdown; return 0."""
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.device not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"error: --device must be cpu, cuda or auto, got {args.device!r}")
    device = torch.device("cuda" if cuda else "cpu")
    steps = args.steps or (100 if cuda else 6)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 2)
    precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    modes = args.modes or (["eager", "compiled"] if cuda else ["eager"])
    if cuda:
        torch.backends.cudnn.benchmark = True  # both paths (the Trainer is passed the same value)
    memory = "channels_last" if args.channels_last else "contiguous"
    print(f"\n## Training throughput on {device.type}: Lightning against a plain loop\n\n{machine_info(device)}\n")
    pace = "window mean" if cuda else "median step"
    print(f"{precision}, {memory}; {steps} timed steps ({pace}) after {warmup} warm-up steps; synthetic batch on "
          f"the device; Lightning with CSV logging every {_log_every_n_steps()} steps + OptimizerStatsCallback; "
          f"best of {args.repeats}\n")  # fmt: skip
    header = ["task", "batch", "px", "optimizer", "mode", "plain img/s", "Lightning img/s", "ratio", "target"]
    if args.sync_check:
        header += ["syncs/step plain", "syncs/step Lightning"]
    rows, profiles = [], []
    gen = torch.Generator().manual_seed(0)
    for name, task, batch_size, size in _cases(args, device):
        batch = task.make_batch(batch_size, size, device, gen)
        for mode in modes:
            for optimizer in args.optimizers:
                plain = light = float("inf")
                for _ in range(args.repeats):  # alternated, so that drifts hit both
                    seconds, plain_syncs = plain_run(_fresh(task, optimizer, device, mode, args), batch, device,
                                                     precision, warmup, steps, args.sync_check, _log_every_n_steps())
                    plain = min(plain, seconds)
                    seconds, window = lightning_run(_fresh(task, optimizer, device, mode, args), batch, device,
                                                    precision, warmup, steps, census=args.sync_check,
                                                    profile=args.profile, progress_bar=args.progress_bar)
                    light = min(light, seconds)  # fmt: skip
                ratio = plain / light
                goal = "-"
                if task.target is not None and cuda:
                    goal = f"≥ {task.target:.0%}: {'yes' if ratio >= task.target else 'no'}"
                row = [name, batch_size, size, optimizer, mode, _rate(batch_size * steps / plain),
                       _rate(batch_size * steps / light), f"{ratio:.1%}", goal]  # fmt: skip
                if args.sync_check:
                    row += [f"{plain_syncs:.1f}", f"{window.syncs:.1f}"]
                rows.append(row)
                if window.profiler is not None:
                    per_step = (light - plain) / steps * 1e3
                    table = _host_profile(window.profiler, window.inspect, window.inspect_seconds)
                    profiles.append(f"### {name} / {optimizer} / {mode}: Lightning {per_step:+.2f} ms/step against "
                                    f"the plain loop\n\n{table}")  # fmt: skip
    print(markdown_table(header, rows))
    if not cuda:
        print("\nCPU figures: every op is synchronous here, so the ratio includes Lightning's host time in full; on a "
              "GPU that time overlaps the queued kernels unless a step synchronises (see syncs/step).")
    for text in profiles:
        print("\n" + text)
    return 0


def _fresh(task: PerfWorkload, optimizer: str, device: torch.device, mode: str, args: argparse.Namespace):
    """A new module; for compiled runs after a dynamo reset, so that every run compiles its
    own graphs (in its warm-up) instead of exhausting dynamo's recompile limit, after which
    it would silently run eagerly."""
    _release(device)
    if mode == "compiled":
        torch.compiler.reset()
    return build_module(task, optimizer, device, mode == "compiled", args.channels_last)


def _rate(images_per_second: float) -> str:
    return f"{images_per_second:,.0f}" if images_per_second >= 100 else f"{images_per_second:.3g}"


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
