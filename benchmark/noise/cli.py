"""``python -m benchmark noise``: is each task's gradient noise heavy-tailed, and does it stay so?

For each task the command builds the run exactly as ``make bench`` does (the stacked
configs of :func:`benchmark.grid.config_stack` with the ``bench`` preset), or from the
``--config`` files of a custom or real-data run, then, inside one Lightning fit
(:func:`benchmark.noise.runner.run_task`):

1. probes the gradient noise at initialisation (:class:`~benchmark.noise.callback.
   GradientNoiseCallback`: K mini-batch gradients against the gradient of a fixed,
   un-augmented subset of the training set);
2. trains ``--train-steps`` optimizer steps with ``--optimizer`` (default ``sgd``, the
   unclipped baseline: the question is about the task, not about a clipping method),
   probing every ``--probe-every`` steps and at the end;
3. writes the table, the JSON lines, the histogram and QQ plot of every probe and the α
   trajectory, and prints per task whether its noise is heavy-tailed and how α moved.

Layout of ``--out`` (default ``results/noise/<timestamp>/``)::

    noise_report.md         the section `make bench` embeds (report.noise_section): table,
                            rule, verdicts, timing, α trajectory
    noise_table.md          the table and the heavy-tail rule
    noise_summaries.jsonl   one NoiseSummary per probe (norms included), every task
    alpha_trajectory.png    α with its interval against the step, one line per task
    summary.json            settings, verdicts, α per probe, time per task, machine load
    <task>/                 <task>_step<s>_hist.png, <task>_step<s>_qq.png, and the task's
                            own noise_table.md / noise_summaries.jsonl / alpha_trajectory.png
    <task>/run/             the Lightning run: csv/ (train/loss, noise/*, config.yaml),
                            final.json, wandb/ (with --wandb offline/online)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .report import (
    REPORT_FILE,
    SUMMARIES_FILE,
    SUMMARY_FILE,
    TABLE_FILE,
    noise_section,
    read_summaries,
    verdict_lines,
    write_report,
)

__all__ = ["DEFAULTS", "QUICK", "build_parser", "main"]

#: The sizes of ``make noise``: the three embedded tasks take 190 s of CPU time on one thread
#: of the 2-core CPU, 4.1 min wall at a load average of 4 and 5.8 min at 5-7 (the machine is
#: shared; see the README). K = 50 is the sample size the heavy-tail rule is calibrated at;
#: the two probes (initialisation, end: 2 x (8 + 50) passes) are three quarters of the cost.
DEFAULTS: dict[str, Any] = {
    "train_steps": 30,
    "probe_every": 0,  # 0: at initialisation and at the end only
    "num_batches": 50,
    "samples_per_batch": 8,  # default --num-samples = this many mini-batches' worth
    "num_bootstrap": 200,
}
#: ``--quick``: a smoke test of the whole pipeline (seconds per task); the numbers mean little.
QUICK: dict[str, Any] = {
    "train_steps": 2,
    "probe_every": 0,
    "num_batches": 8,
    "samples_per_batch": 2,
    "num_bootstrap": 50,
}

_WANDB_MODES = ("disabled", "offline", "online", "auto")


# ------------------------------------------------------------------------- arguments
def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` is the command's documentation)."""
    from benchmark.grid import DATASETS

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
    tasks.add_argument("--datasets", nargs="+", choices=DATASETS, default=None,
                       help=f"embedded tasks, built as `make bench` builds them (default: {' '.join(DATASETS)})")
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
                            f"from (default {DEFAULTS['samples_per_batch']} batches' worth, at most the training set)")
    probe.add_argument("--batch-size", type=int, default=None, metavar="B",
                       help="noise mini-batch size (default: the task's training batch, the noise the optimizer sees)")
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


@dataclass
class _Task:
    """One task to probe: its label (None: the dataset's name) and its config stack."""

    label: str | None
    configs: list[Path]


def _resolve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[list[_Task], Any]:
    """Fill the size defaults (``--quick`` or not), validate the values; the tasks and settings."""
    from benchmark.grid import DATASETS, config_stack

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
    for flag, value, low in checks:
        if value < low:
            parser.error(f"{flag} {value}: must be >= {low}")
    if args.num_samples is not None and args.batch_size is not None and args.num_samples <= args.batch_size:
        parser.error(f"--num-samples {args.num_samples} must exceed --batch-size {args.batch_size} "
                     "(the mini-batches are drawn from the subset)")

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
        tasks = [_Task(None, configs)]  # labelled by its dataset once the DataModule exists
    else:
        args.optimizer = args.optimizer or "sgd"
        # Every stack is checked before the first task starts: a typo must not cost a task's run.
        tasks = [_Task(d, config_stack(d, args.optimizer, "bench")) for d in (args.datasets or list(DATASETS))]
    from .runner import ProbeSettings

    settings = ProbeSettings(
        train_steps=args.train_steps, probe_every=args.probe_every, num_batches=args.num_batches,
        num_samples=args.num_samples, samples_per_batch=preset["samples_per_batch"], batch_size=args.batch_size,
        sketch_dim=args.sketch_dim, mode=args.mode, num_bootstrap=args.num_bootstrap, seed=args.seed,
        wandb=args.wandb, progress=not args.no_progress,
    )
    return tasks, settings


# ------------------------------------------------------------------------------ main
def _task_entry(outcome: Any, command: str) -> dict[str, Any]:
    """One task's entry of summary.json: verdict, α per probe, settings, time, load."""
    rows = outcome.summaries
    return {
        "heavy_tailed": bool(rows[-1].heavy_tailed),
        "heavy_tailed_at": [s.step for s in rows if s.heavy_tailed],
        "verdict": verdict_lines(rows)[0],
        "probes": [
            {"step": s.step, "alpha": s.alpha.alpha if s.alpha else None,
             "alpha_low": s.alpha.low if s.alpha else None, "alpha_high": s.alpha.high if s.alpha else None,
             "hill": s.hill, "kurtosis": s.kurtosis, "max_median": s.max_median,
             "max_median_gauss_q95": s.gaussian_stats.max_median_q95, "heavy_tailed": s.heavy_tailed,
             "time_s": round(s.time_s, 2)}
            for s in rows
        ],
        "command": command,
        "settings": outcome.settings,
        "time": outcome.timing,
        "load_1min": outcome.load,
    }


def _write_top_level(out: Path, outcomes: Sequence[Any], command: str, threads: int) -> None:
    """summary.json, the table, the JSON lines, the trajectory and noise_report.md of ``out``.

    They cover every task folder in ``out``, earlier invocations' included: a grid can
    call the command once per task (e.g. one ``--config`` stack per real dataset) with
    the same ``--out`` and get one report.
    """
    import torch

    path = out / SUMMARY_FILE
    tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"] if path.is_file() else {}
    tasks.update({o.label: _task_entry(o, command) for o in outcomes})
    summary = {
        "tasks": tasks,
        "total_s": round(sum(t["time"]["total_s"] for t in tasks.values()), 1),
        "load_1min": {"min": min(t["load_1min"]["min"] for t in tasks.values()),
                      "max": max(t["load_1min"]["max"] for t in tasks.values())},
        "machine": {
            "cpu_count": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
    }
    summaries = [s for label in tasks if (out / label / SUMMARIES_FILE).is_file() for s in read_summaries(out / label)]
    write_report(summaries, out, plots=False)  # the per-probe plots are in the task folders
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(noise_section(out), encoding="utf-8")


def _timing_lines(outcomes: Sequence[Any], wall: float, threads: int) -> list[str]:
    lines = []
    for o in outcomes:
        t, load = o.timing, o.load
        lines.append(
            f"  {o.label}: {t['total_s']:.0f} s (setup {t['setup_s']:.0f}, probes {t['probes_s']:.0f}, "
            f"training {t['training_s']:.0f}, statistics/plots {t['other_s']:.0f}; CPU {t['cpu_s']:.0f} s), "
            f"load {load['mean']:.1f} [{load['min']:.1f}-{load['max']:.1f}]"
        )
    lines.append(f"  total: {wall:.0f} s on {os.cpu_count()} cores, {threads} torch thread(s); load = the 1-min "
                 "load average while the task ran (other jobs included)")
    return lines


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
    tasks, settings = _resolve(args, parser)
    out = Path(args.out or f"results/noise/{time.strftime('%Y%m%d-%H%M%S')}")

    import torch

    from .runner import run_task  # Lightning and the models: seconds to import, so not for --help

    previous_threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    start = time.monotonic()
    outcomes = []
    try:
        for task in tasks:
            outcome = run_task(task.configs, out, settings, label=task.label, extra=argv[split + 1 :])
            outcomes.append(outcome)
            if outcome.global_zero:
                line = verdict_lines(outcome.summaries)[0] if outcome.summaries else f"{outcome.label}: no probe succeeded"
                print(f"{line} [{outcome.timing['total_s']:.0f} s]", flush=True)
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a longer process (tests)
        # Also after a failed task: what finished is reported.
        done = [o for o in outcomes if o.global_zero and o.summaries]
        wall = time.monotonic() - start
        if done:
            _write_top_level(out, done, shlex.join(["python", "-m", "benchmark", "noise", *argv]), threads)
    if not outcomes[-1].global_zero:
        return 0  # the other ranks of a DDP run: rank 0 reports
    if not done:
        print("error: no noise probe succeeded (see the warnings above)", file=sys.stderr)
        return 1
    print()
    print((out / TABLE_FILE).read_text(encoding="utf-8").rstrip())
    print("\nper task (verdict at the last probe; α at each probe):")
    print("\n".join("  " + line for o in done for line in verdict_lines(o.summaries)))
    print("\ntime:")
    print("\n".join(_timing_lines(done, wall, threads)))
    print(f"\nwrote {out}/: {REPORT_FILE}, {TABLE_FILE}, {SUMMARIES_FILE}, alpha_trajectory.png, {SUMMARY_FILE}, "
          "<task>/ (histogram and QQ plot per probe)")
    return 0
