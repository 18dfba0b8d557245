"""``python -m benchmark.perf optim``: optimizer step time on real parameter sets.

For the parameter sets of ResNet-18 (100 classes, 11.2M) and VGG-16 (21 classes, 134M,
the FCN-32s backbone), every registered optimizer and three torch baselines take steps on
fixed random gradients; the median step time is printed with its ratio to torch SGD with
momentum (foreach), to ``clip_grad_norm_`` + that SGD, and to torch Adam (fused on CUDA),
all measured in the same process. The "floor" column is the time the update's
compulsory memory traffic would take at the measured copy bandwidth.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision

from optim import build_optimizer, list_optimizers

from .common import copy_bandwidth, machine_info, markdown_table, median_time

PARAM_SETS: dict[str, Callable[[], torch.nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=100),
    "vgg16": lambda: torchvision.models.vgg16(num_classes=21),
}

# Compulsory passes over a parameter-sized tensor per step (reads + writes), for the floor.
_PASSES = {
    "sgd": 5,  # read g; read+write b; read+write x
    "clip+sgd": 6,  # + one read of g for the norm (the scaling folds into the update)
    "adam": 7,  # read g; read+write m, v, x
    "adamw": 7,
    "clipped_sgd": 6,
    "clipped_sgd (norm)": 6,
    "clipped_sstm": 7,  # read g (norm) and again; read+write z; read+write y; write x
}


@dataclass
class Row:
    name: str
    seconds: float
    passes: int | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available, plus cpu)")
    parser.add_argument("--param-sets", nargs="+", default=list(PARAM_SETS), choices=list(PARAM_SETS))
    parser.add_argument("--optimizers", nargs="+", default=None, help="registry names (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per optimizer (default: 20 cuda, 7 cpu)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sync-check", action="store_true", help="on CUDA, also run each step under set_sync_debug_mode('error')")


def _baselines(device: torch.device) -> dict[str, Callable]:
    fused = device.type == "cuda"

    def clip_then_sgd(params):
        sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True)

        class ClipThenSGD:
            def step(self):
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                sgd.step()

        return ClipThenSGD()

    return {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, foreach=True),
        "clip+sgd": clip_then_sgd,
        "adam": lambda p: torch.optim.Adam(p, lr=1e-3, **({"fused": True} if fused else {"foreach": True})),
    }


def _candidates(names: list[str]) -> dict[str, Callable]:
    out = {}
    for name in names:
        if name in ("sgd", "adam"):
            continue  # measured as baselines with explicit foreach/fused settings
        out[name] = lambda p, name=name: build_optimizer(name, p)
        if name == "clipped_sgd":
            out["clipped_sgd (norm)"] = lambda p: build_optimizer("clipped_sgd", p, clipping="norm", clip_level=1.0)
    return out


def measure(param_set: str, device: torch.device, names: list[str], repeats: int, warmup: int, sync_check: bool):
    model = PARAM_SETS[param_set]().to(device)
    params = [p for p in model.parameters()]
    gen = torch.Generator(device=device).manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen, device=device) * 1e-2 for p in params]
    rows, sync_free = [], {}
    for label, make in {**_baselines(device), **_candidates(names)}.items():
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.grad = g.clone()
        opt = make(params)
        seconds = median_time(opt.step, device=device, warmup=warmup, repeats=repeats)
        rows.append(Row(label, seconds, _PASSES.get(label)))
        if sync_check and device.type == "cuda" and label not in _baselines(device):
            torch.cuda.set_sync_debug_mode("error")
            try:
                opt.step()
                sync_free[label] = "yes"
            except RuntimeError as err:
                sync_free[label] = f"NO ({str(err).splitlines()[0][:60]})"
            finally:
                torch.cuda.set_sync_debug_mode("default")
        del opt
    nbytes = sum(p.numel() * p.element_size() for p in params)
    return rows, nbytes, sync_free


def run(args: argparse.Namespace) -> int:
    devices = [torch.device("cpu")]
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices = [torch.device("cuda")] + ([torch.device("cpu")] if args.device == "auto" else [])
    elif args.device not in ("auto", "cpu"):
        raise SystemExit(f"error: --device must be cpu, cuda or auto, got {args.device!r}")
    names = args.optimizers or list_optimizers()
    unknown = sorted(set(names) - set(list_optimizers()))
    if unknown:
        raise SystemExit(f"error: unknown optimizer(s) {unknown}; available: {', '.join(list_optimizers())}")
    for device in devices:
        repeats = args.repeats or (20 if device.type == "cuda" else 7)
        bandwidth = copy_bandwidth(device)
        print(f"\n## Optimizer step time on {device.type}\n\n{machine_info(device)}; "
              f"measured copy bandwidth {bandwidth / 1e9:.1f} GB/s; median of {repeats} steps\n")
        for param_set in args.param_sets:
            rows, nbytes, sync_free = measure(param_set, device, names, repeats, args.warmup, args.sync_check)
            base = {r.name: r.seconds for r in rows}
            header = ["optimizer", "ms/step", "× SGD", "× clip+SGD", "× Adam", "floor ms"]
            if sync_free:
                header.append("sync-free")
            table = []
            for r in rows:
                floor = f"{r.passes * nbytes / bandwidth * 1e3:.2f}" if r.passes else "-"
                line = [
                    r.name,
                    f"{r.seconds * 1e3:.2f}",
                    f"{r.seconds / base['sgd']:.2f}",
                    f"{r.seconds / base['clip+sgd']:.2f}",
                    f"{r.seconds / base['adam']:.2f}",
                    floor,
                ]
                if sync_free:
                    line.append(sync_free.get(r.name, "-"))
                table.append(line)
            print(f"### {param_set} ({nbytes / 4 / 1e6:.1f}M float32 parameters)\n")
            print(markdown_table(header, table) + "\n")
    return 0
