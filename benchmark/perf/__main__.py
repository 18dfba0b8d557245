"""``python -m benchmark.perf <command>``: speed benchmarks, printed as markdown tables.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "optim": ("benchmark.perf.optim", "median optimizer step time on the ResNet-18 and VGG-16 parameter sets"),
    "data": ("benchmark.perf.data", "decoded + augmented images/s of each DataModule, 0/1/2 workers"),
    "train": ("benchmark.perf.train", "images/s of each task module under Lightning against a plain PyTorch loop"),
    "input": ("benchmark.perf.input", "ImageNet JPEG decode + augment images/s per core, and the GPU-decode path"),
    "all": ("benchmark.perf.report", "optim, train, input and data as one markdown report (the README's section)"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.perf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_) in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=help_, description=help_))
    args = parser.parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
