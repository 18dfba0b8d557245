"""``python -m benchmark noise``: is each task's gradient noise heavy-tailed, and does it stay so?

For each task the command builds the run exactly as ``make bench`` does (the stacked
configs of :func:`benchmark.grid.config_stack` with the ``bench`` preset), or from the
``--config`` files of a custom or real-data run, then, inside one Lightning fit
(:func:`benchmark.noise.runner.run_task`):

1. probes the gradient noise at initialisation (:class:`~benchmark.noise.callback.
   GradientNoiseCallback`: K mini-batch gradients against the gradient of a fixed,
   un-augmented subset of the training set), at each of the task's noise batch sizes
   (``--batch-sizes``; default the training batch b and b/4: tails depend on the batch
   size);
2. trains ``--train-steps`` optimizer steps with ``--optimizer`` (default ``sgd``, the
   unclipped baseline: the question is about the task, not about a clipping method),
   probing every ``--probe-every`` steps and at the end;
3. writes the table (one row per task, batch size and step), the JSON lines, the CSV,
   the histogram and QQ plot of every probe and the α trajectory, and prints per task
   and batch size whether its noise is heavy-tailed and how α moved.

The tasks are a list of :class:`ProbeTarget` (a name and its config stack), built by
:func:`probe_targets` from the names :func:`task_names` returns.

Layout of ``--out`` (default ``results/noise/<timestamp>/``)::

    noise_report.md         the section `make bench` embeds (report.noise_section): table,
                            rule, verdicts, timing, α trajectory
    noise_table.md          the table and the heavy-tail rule
    noise_table.csv         the table's numbers, one row per (task, batch size, step)
    noise_summaries.jsonl   one NoiseSummary per probe (norms included), every task
    alpha_trajectory.png    α with its interval against the step, one line per task and
                            batch size
    summary.json            settings, verdicts, α per probe, time per task, machine load
    <task>/                 <task>_b<B>_step<s>_hist.png, ..._qq.png (<task>_step<s>_... when
                            one batch size is probed), and the task's own noise_table.md /
                            noise_summaries.jsonl / alpha_trajectory.png
    <task>/run/             the Lightning run: csv/ (train/loss, noise/*, config.yaml),
                            final.json, wandb/ (with --wandb offline/online)
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .outputs import timing_lines, write_top_level
from .report import (
    CSV_FILE,
    REPORT_FILE,
    SUMMARIES_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    verdict_lines,
)

__all__ = ["DEFAULTS", "QUICK", "ProbeTarget", "build_parser", "main", "probe_targets", "task_names"]

#: The sizes of ``make noise``. K = 50 is the sample size the heavy-tail rule is calibrated
#: at. Each probe point measures at b and b/4 (b the training batch): with the subset of
#: 8 batches of b, a probe at b costs 8b + 50b samples and one at b/4 8b + 12.5b, so the
#: second batch size adds a third to the probes' cost (they were three quarters of it).
DEFAULTS: dict[str, Any] = {
    "train_steps": 30,
    "probe_every": 0,  # 0: at initialisation and at the end only
    "num_batches": 50,
    "samples_per_batch": 8,  # default --num-samples = this many mini-batches (of the largest size)
    "num_bootstrap": 200,
    "batch_divisors": (4, 1),  # default noise batch sizes: b/4 and b
}
#: ``--quick``: a smoke test of the whole pipeline (seconds per task); the numbers mean little.
QUICK: dict[str, Any] = {
    "train_steps": 2,
    "probe_every": 0,
    "num_batches": 8,
    "samples_per_batch": 2,
    "num_bootstrap": 50,
    "batch_divisors": (1,),  # the training batch only
}

_WANDB_MODES = ("disabled", "offline", "online", "auto")


# ------------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class ProbeTarget:
    """One task the command probes: its label, its config stack and its own batch sizes.

    Attributes:
        label: the table's name of the task; None: the DataModule's dataset name.
        configs: the stacked LightningCLI config files.
        batch_sizes: noise batch sizes of this task; None: the default rule
            (:func:`benchmark.noise.runner.noise_batch_sizes`). ``--batch-sizes`` wins.
    """

    label: str | None
    configs: list[Path]
    batch_sizes: tuple[int, ...] | None = None


def task_names() -> tuple[str, ...]:
    """The tasks ``make noise`` probes by default and ``--datasets`` offers: the suite's
    embedded datasets, each with ``benchmark/configs/<name>/``."""
    from benchmark.grid import DATASETS

    return tuple(DATASETS)


def probe_targets(names: Sequence[str], optimizer: str) -> list[ProbeTarget]:
    """The :class:`ProbeTarget` of each named task, built as ``make bench`` builds it.

    Raises:
        FileNotFoundError: no ``benchmark/configs/<name>/<optimizer>.yaml`` (the message
            lists the optimizers that have one).
    """
    from benchmark.grid import config_stack

    return [ProbeTarget(name, config_stack(name, optimizer, "bench")) for name in names]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` is the command's documentation)."""
    names = task_names()
    parser = argparse.ArgumentParser(
        prog="python -m benchmark noise",
        description=(
            "Gradient-noise tail diagnostics: for each task, measure the mini-batch noise "
            "‖∇f(x, ξ) − ∇f(x)‖ at initialisation and after some training, estimate its stable tail "
            "index α with a 95 % interval, compare it with Gaussian noise of the same covariance moments, "
            "and say whether it is heavy-tailed."
        ),
        epilog=(
            "Heavy-tailed = the whole α interval lies below 1.9 and the largest noise norm exceeds the "
            "95th percentile of the Gaussian reference's max/median. Arguments after -- go to every "
            "`python -m benchmark fit`, e.g. -- --data.init_args.data_dir /data/imagenet100 "
            "--trainer.accelerator gpu. How to read the outputs: README, 'Reading the gradient-noise report'."
        ),
    )
    tasks = parser.add_argument_group("tasks")
    tasks.add_argument("--datasets", nargs="+", choices=names, default=None,
                       help=f"embedded tasks, built as `make bench` builds them (default: {' '.join(names)})")
    tasks.add_argument("--config", action="append", metavar="FILE", default=None,
                       help="a custom run instead: stacked LightningCLI config files (repeat the flag), "
                            "e.g. the full-protocol stack with real data")
    tasks.add_argument("--optimizer", default=None,
                       help="optimizer of the training between probes (default sgd); needs "
                            "benchmark/configs/<dataset>/<optimizer>.yaml; with --config, set it in the files")
    tasks.add_argument("--seed", type=int, default=0, help="seed_everything: initial weights and data order (default 0)")
    tasks.add_argument("--threads", type=int, default=1, metavar="T",
                       help="torch intra-op threads (default 1; 0: torch's choice, one per core). On the 2-core "
                            "CI machine shared with other jobs, one thread ran the default in 4 min, two in 15: "
                            "a thread waiting for a descheduled sibling spins")

    probe = parser.add_argument_group("probe schedule and size")
    probe.add_argument("--train-steps", type=int, default=None, metavar="N",
                       help=f"optimizer steps after the probe at initialisation (default {DEFAULTS['train_steps']}; "
                            "0: probe at initialisation only)")
    probe.add_argument("--probe-every", type=int, default=None, metavar="N",
                       help="also probe every N steps (default 0: at initialisation and at the end only)")
    probe.add_argument("--num-batches", type=int, default=None, metavar="K",
                       help=f"noise mini-batches per probe (default {DEFAULTS['num_batches']}, >= 4)")
    probe.add_argument("--num-samples", type=int, default=None, metavar="S",
                       help="training samples the full gradient averages, the subset the mini-batches are drawn "
                            f"from, shared by the batch sizes (default {DEFAULTS['samples_per_batch']} batches of the largest, at most "
                            "the training set)")
    probe.add_argument("--batch-sizes", type=int, nargs="+", default=None, metavar="B",
                       help="noise mini-batch sizes, each probed at every probe point (default per task: its "
                            "training batch b, the noise the optimizer sees, and b/4, at least 2; --quick: b only)")
    probe.add_argument("--batch-size", type=int, default=None, metavar="B",
                       help="a single noise mini-batch size (as --batch-sizes B)")
    probe.add_argument("--sketch-dim", type=int, default=1000, metavar="P",
                       help="count-sketch dimension the α estimate uses (default 1000; 0: full-dimensional blocks)")
    probe.add_argument("--mode", choices=("train", "eval"), default="train",
                       help="forward mode of the probe: train (BatchNorm batch statistics, as the optimizer sees) or eval")
    probe.add_argument("--num-bootstrap", type=int, default=None, metavar="R",
                       help=f"bootstrap replicates of the α interval (default {DEFAULTS['num_bootstrap']})")
    probe.add_argument("--quick", action="store_true",
                       help=f"smoke-test sizes ({QUICK['num_batches']} mini-batches, {QUICK['train_steps']} steps); "
                            "explicit flags still win. The verdicts of a quick run mean little")

    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, metavar="DIR", help="results folder (default results/noise/<timestamp>)")
    output.add_argument("--wandb", choices=_WANDB_MODES, default="disabled",
                        help="Weights & Biases mode of the runs (default disabled; offline/online also log the "
                             "noise histograms and plots there)")
    output.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[ProbeTarget], Any]:
    """Fill the size defaults (``--quick`` or not), validate the values; the targets and settings."""
    _check_sizes(args, parser)
    targets = _targets(args, parser)
    from .runner import ProbeSettings

    preset = QUICK if args.quick else DEFAULTS
    settings = ProbeSettings(
        train_steps=args.train_steps, probe_every=args.probe_every, num_batches=args.num_batches,
        num_samples=args.num_samples, samples_per_batch=preset["samples_per_batch"], batch_size=args.batch_size,
        batch_sizes=tuple(args.batch_sizes) if args.batch_sizes else None, batch_divisors=preset["batch_divisors"],
        sketch_dim=args.sketch_dim, mode=args.mode, num_bootstrap=args.num_bootstrap, seed=args.seed,
        wandb=args.wandb, progress=not args.no_progress,
    )
    return targets, settings


def _check_sizes(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill the preset's sizes where no flag was given; usage errors for values out of range."""
    preset = QUICK if args.quick else DEFAULTS
    for name in ("train_steps", "probe_every", "num_batches", "num_bootstrap"):
        if getattr(args, name) is None:
            setattr(args, name, preset[name])
    checks = [
        ("--train-steps", args.train_steps, 0), ("--probe-every", args.probe_every, 0),
        ("--num-batches", args.num_batches, 4), ("--sketch-dim", args.sketch_dim, 0),
        ("--num-bootstrap", args.num_bootstrap, 10), ("--threads", args.threads, 0),
    ]
    if args.num_samples is not None:
        checks.append(("--num-samples", args.num_samples, 2))
    if args.batch_size is not None:
        checks.append(("--batch-size", args.batch_size, 1))
    if args.batch_size is not None and args.batch_sizes:
        parser.error("--batch-size and --batch-sizes exclude each other: --batch-sizes B probes B only")
    checks += [("--batch-sizes", b, 1) for b in args.batch_sizes or ()]
    for flag, value, low in checks:
        if value < low:
            parser.error(f"{flag} {value}: must be >= {low}")
    if args.num_samples is not None and args.batch_size is not None and args.num_samples <= args.batch_size:
        parser.error(f"--num-samples {args.num_samples} must exceed --batch-size {args.batch_size} "
                     "(the mini-batches are drawn from the subset)")
    if args.num_samples is not None and args.batch_sizes and args.num_samples <= max(args.batch_sizes):
        parser.error(f"--num-samples {args.num_samples} must exceed the largest of --batch-sizes, "
                     f"{max(args.batch_sizes)} (the mini-batches are drawn from the subset)")


def _targets(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ProbeTarget]:
    """The tasks: one custom ``--config`` stack, or the named (default: all) embedded tasks."""
    if args.config:
        if args.datasets:
            parser.error("--datasets and --config exclude each other: --config describes one custom run")
        if args.optimizer:
            parser.error("--optimizer picks benchmark/configs/<dataset>/<optimizer>.yaml; with --config, "
                         "set model.init_args.optimizer in your config files")
        configs = [Path(c) for c in args.config]
        missing = [str(c) for c in configs if not c.is_file()]
        if missing:
            parser.error(f"--config: no such file: {', '.join(missing)}")
        return [ProbeTarget(None, configs)]  # labelled by its dataset once the DataModule exists
    args.optimizer = args.optimizer or "sgd"
    # Every stack is checked before the first task starts: a typo must not cost a task's run.
    return probe_targets(args.datasets or task_names(), args.optimizer)


def main(argv: list[str] | None = None) -> int:
    """Run the noise diagnostics; returns the exit status (0: written).

    Args:
        argv: the arguments after ``noise`` (default ``sys.argv[1:]``); those after ``--``
            go to every task's ``fit``.

    Raises:
        SystemExit: for invalid arguments (argparse/jsonargparse print the reason).
        ValueError, FileNotFoundError: for a task that cannot be probed (the dispatcher
            prints the message).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser()
    args = parser.parse_args(argv[:split])
    targets, settings = _resolve(args, parser)
    out = Path(args.out or f"results/noise/{time.strftime('%Y%m%d-%H%M%S')}")

    import torch

    from .runner import (
        run_task,  # Lightning and the models: seconds to import, so not for --help
    )

    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    start = time.monotonic()
    outcomes = []
    try:
        for target in targets:
            outcome = run_task(target.configs, out, settings, label=target.label, extra=argv[split + 1 :],
                               batch_sizes=target.batch_sizes)
            outcomes.append(outcome)
            if outcome.global_zero:
                lines = verdict_lines(outcome.summaries) or [f"{outcome.label}: no probe succeeded"]
                print("\n".join(lines[:-1] + [f"{lines[-1]} [{outcome.timing['total_s']:.0f} s]"]), flush=True)
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a longer process (tests)
        # Also after a failed task: what finished is reported.
        done = [o for o in outcomes if o.global_zero and o.summaries]
        wall = time.monotonic() - start
        if done:
            write_top_level(out, done, shlex.join(["python", "-m", "benchmark", "noise", *argv]), threads)
    if not outcomes[-1].global_zero:
        return 0  # the other ranks of a DDP run: rank 0 reports
    if not done:
        print("error: no noise probe succeeded (see the warnings above)", file=sys.stderr)
        return 1
    print()
    print((out / TABLE_FILE).read_text(encoding="utf-8").rstrip())
    print("\nper task and batch size (verdict at the last probe; α at each probe):")
    print("\n".join("  " + line for o in done for line in verdict_lines(o.summaries)))
    print("\ntime:")
    print("\n".join(timing_lines(done, wall, threads)))
    print(f"\nwrote {out}/: {REPORT_FILE}, {TABLE_FILE}, {CSV_FILE}, {SUMMARIES_FILE}, alpha_trajectory.png, {SUMMARY_FILE}, "
          "<task>/ (histogram and QQ plot per probe)")
    return 0
