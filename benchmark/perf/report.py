"""``python -m benchmark.perf all``: every speed benchmark, as one markdown report.

Runs ``optim`` (optimizer step time, each implementation on CUDA), ``train`` (Lightning
against a plain loop), ``input`` (can the ImageNet pipeline feed the GPU) and ``data``
(DataModule loaders on this CPU), each with its defaults for the device, and prints one
report headed by the machine, the versions and the command that made it: the README's
performance section. ``--output FILE`` also writes it to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import io
import shlex
import sys
from typing import TextIO

import torch

from .common import machine_info

__all__ = ["SECTIONS", "add_arguments", "run"]

SECTIONS = {
    "optim": "benchmark.perf.optim",
    "train": "benchmark.perf.train",
    "input": "benchmark.perf.input",
    "data": "benchmark.perf.data",
}
# Sections whose own --device option the report's --device is passed to.
_WITH_DEVICE = ("optim", "train", "input")
# Small settings for a smoke run of the whole report (tests, a first look on a new machine).
_QUICK = {
    "optim": ["--param-sets", "resnet18", "--optimizers", "clipped_sgd", "clipped_sstm", "--repeats", "2",
              "--warmup", "1"],
    "train": ["--tasks", "srresnet", "--optimizers", "sgd", "clipped_sstm", "--steps", "2", "--warmup", "1",
              "--batch-size", "2", "--image-size", "16"],
    "input": ["--count", "3", "--size", "160x120", "--repeats", "1", "--workers", "0"],
    "data": ["--tables", "backends", "--datamodules", "div2k", "--samples", "3", "--repeats", "1"],
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options on ``parser``."""
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto, passed to optim, train and input")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="tiny settings: a smoke run, not figures to quote")
    parser.add_argument("--output", default=None, help="also write the report to this markdown file")


class _Tee(io.TextIOBase):
    """Writes to the terminal as it goes (sections take minutes) and keeps a copy."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.stream.flush()
        return self.buffer.write(text)


def _section_args(name: str, module, device: str, quick: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m benchmark.perf {name}")
    module.add_arguments(parser)
    argv = (["--device", device] if name in _WITH_DEVICE else []) + (_QUICK[name] if quick else [])
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    """Run the sections in order and print (and optionally write) the report; return the
    first non-zero status of a section, else 0."""
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    options = ["--device", args.device, "--sections", *args.sections] + (["--quick"] if args.quick else [])
    command = "python -m benchmark.perf all " + shlex.join(options + (["--output", args.output] if args.output else []))
    tee = _Tee(sys.stdout)
    status = 0
    with contextlib.redirect_stdout(tee):
        print("# Performance\n")
        print(f"- Device: {machine_info(device)}")
        print(f"- Date: {datetime.date.today().isoformat()}")
        print(f"- Command: `{command}`" + (" (quick settings: not figures to quote)" if args.quick else ""))
        if device == "cpu":
            print("- No GPU: the issue's targets are H100 figures and are not measured here.")
        for name in args.sections:
            module = importlib.import_module(SECTIONS[name])
            section_args = _section_args(name, module, args.device, args.quick)
            print(f"\n<!-- section: {name} -->")
            status = status or int(module.run(section_args) or 0)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(tee.buffer.getvalue())
    return status
