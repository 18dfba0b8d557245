"""The clipbench command line: one entry point, one subcommand per job.

Each subcommand lives in its own module and exposes ``main(argv) -> int``; this file only
dispatches, so ``python -m benchmark --help`` stays fast (nothing heavy is imported).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand -> (module with main(argv), one line for --help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("benchmark.lightning_cli", "train a task with one optimizer (LightningCLI; stacked --config files)"),
    "validate": ("benchmark.lightning_cli", "evaluate a checkpoint on the validation set"),
    "test": ("benchmark.lightning_cli", "evaluate a checkpoint on the test split"),
    "run": ("benchmark.grid", "run a grid of tasks x optimizers x seeds (one process per run) and write the report"),
    "sweep": ("benchmark.sweep", "a W&B sweep over one optimizer's hyperparameters (prints or creates it)"),
    "slurm": ("benchmark.cluster", "submit runs to a SLURM cluster (one requeueable DDP job per run)"),
    "report": ("benchmark.report", "rebuild the results table and plots from finished runs (CSV logs or offline W&B)"),
    "convex": ("benchmark.convex.cli", "convex theory suite: high-probability guarantees over many seeds"),
    "noise": ("benchmark.noise.cli", "gradient-noise tail diagnostics (is this task heavy-tailed?)"),
    "optimizers": ("benchmark.optimizers", "list the registered optimizers: family, paper, defaults, search space"),
    "tune": ("benchmark.tune", "equal-budget hyperparameter tuning on the held-out split (Optuna; resumable, shareable)"),
    "dashboard": ("benchmark.dashboard", "create a saved W&B workspace: per task, curves by optimizer, clip fraction, noise alpha"),
}


def parse_with_extra(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) up to a ``--``; what follows it, meant for
    every ``python -m benchmark fit`` the command starts, is ``args.extra``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.extra = argv[split + 1 :]
    return args


def _usage() -> str:
    lines = ["usage: python -m benchmark <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `python -m benchmark <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"error: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    if command in ("fit", "validate", "test"):
        rest = [command, *rest]
    try:
        return int(module.main(rest) or 0)
    except (ValueError, FileNotFoundError, OSError) as err:
        # Configuration and data errors carry their own explanation; a traceback only
        # buries it. CLIPBENCH_TRACEBACK=1 shows it anyway.
        if os.environ.get("CLIPBENCH_TRACEBACK"):
            raise
        print(f"error: {err}\n(set CLIPBENCH_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 2
