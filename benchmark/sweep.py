"""``python -m benchmark sweep DATASET OPTIMIZER``: a W&B sweep over one optimizer's hyperparameters.

``benchmark/sweeps/<dataset>.yaml`` holds, per optimizer, the search space; this command
turns it into a complete W&B sweep config whose ``command`` is the same stack of
``--config`` files a grid run uses, followed by W&B's ``${args}`` (``--key=value`` flags
that LightningCLI parses). It prints the config (``--print``, or always when W&B is not
online) or creates the sweep with ``wandb sweep`` and prints the ``wandb agent`` command.

Why flags and not ``wandb.config``: under DDP only rank 0 has a W&B run, so values read
from ``wandb.config`` would reach rank 0 alone; command-line flags are part of the command
that Lightning, torchrun or srun start on every rank.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from .grid import DATASETS, config_stack
from .tracking import resolve_wandb_mode

__all__ = ["SWEEP_DIR", "load_sweep", "main", "sweep_config"]

SWEEP_DIR = Path(__file__).parent / "sweeps"


def load_sweep(dataset: str) -> dict[str, Any]:
    """The search spaces of ``benchmark/sweeps/<dataset>.yaml``.

    Raises:
        FileNotFoundError: no sweep file for ``dataset``.
    """
    path = SWEEP_DIR / f"{dataset}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no sweep file {path}; sweeps exist for: {', '.join(p.stem for p in SWEEP_DIR.glob('*.yaml'))}")
    return yaml.safe_load(path.read_text())


def sweep_config(dataset: str, optimizer: str, *, preset: str = "full", data_dir: str | None = None, extra: list[str] = ()) -> dict[str, Any]:
    """A complete W&B sweep config for one dataset and optimizer.

    Raises:
        ValueError: the sweep file has no search space for ``optimizer``.
    """
    spec = load_sweep(dataset)
    spaces = spec["optimizers"]
    if optimizer not in spaces:
        raise ValueError(f"benchmark/sweeps/{dataset}.yaml has no search space for {optimizer!r}; it has: {', '.join(spaces)}")
    command = ["${env}", "${interpreter}", "-m", "benchmark", "fit"]
    for path in config_stack(dataset, optimizer, preset):
        command += ["--config", str(path)]
    if data_dir:
        command += ["--data.init_args.data_dir", data_dir]
    command += [*extra, "${args}"]
    return {
        "name": f"clipbench-{dataset}-{optimizer}",
        "method": spec["method"],
        "metric": spec["metric"],
        "parameters": {"model.init_args.optimizer": {"value": optimizer}, **spaces[optimizer]},
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("optimizer")
    parser.add_argument("--data-dir", default=None, help="root of the real dataset (with --preset full)")
    parser.add_argument("--preset", choices=("full", "bench"), default="full")
    parser.add_argument("--project", default="clipbench")
    parser.add_argument("--print", action="store_true", help="only print the sweep config")
    parser.add_argument("extra", nargs="*", help="more flags for every run, after --")
    args = parser.parse_args(argv)
    if args.preset == "full" and not args.data_dir:
        print("error: --data-dir is required with --preset full", file=sys.stderr)
        return 2
    config = sweep_config(args.dataset, args.optimizer, preset=args.preset, data_dir=args.data_dir, extra=args.extra)
    text = yaml.safe_dump(config, sort_keys=False)
    online = resolve_wandb_mode("auto") == "online"
    if args.print or not online:
        print(text)
        if not online and not args.print:
            print("# W&B is not online (no credentials or no network): sweeps need the W&B server.\n"
                  "# Save this config and run `wandb sweep <file>` where W&B is reachable.", file=sys.stderr)
        return 0
    import wandb

    sweep_id = wandb.sweep(config, project=args.project)
    print(f"created sweep {sweep_id}; start agents with:\n  wandb agent {args.project}/{sweep_id}")
    return 0
