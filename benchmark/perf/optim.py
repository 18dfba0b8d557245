"""``python -m benchmark.perf optim``: optimizer step time on real parameter sets.

For the parameter sets of ResNet-18 (100 classes, 11.2M) and VGG-16 (21 classes, 134M,
the FCN-32s backbone), every registered optimizer and three torch baselines take steps on
fixed random gradients; the median step time is printed with its ratio to torch SGD with
momentum and to torch Adam (both fused on CUDA, foreach on CPU), and to ``clip_grad_norm_``
+ foreach SGD, all measured in the same process. The "floor" column is the time the
update's compulsory memory traffic would take at the measured copy bandwidth.

On CUDA the clipping optimizers are timed in each implementation (``--impls``): the
foreach kernels, the fused Triton kernels, and ``torch.compile`` of the foreach
functional (plain, and with inductor's horizontal ``combo_kernels``). The "target"
column checks the goals: on CPU clipped-SSTM ≤ 2.5× SGD with momentum and clipped-SGD
(norm) ≤ 1.1× clip_grad_norm_ + SGD, NSGD-M ≤ 1.2× SGD with momentum, clipped Adam
≤ 1.2× AdamW (foreach), and each clipping policy (AutoClip, ZClip, AGC) ≤ 1.2× its base
optimizer (the policy pairs run their torch base with the baseline's foreach/fused); on CUDA (H100) clipped-SSTM ≤ 0.9× fused Adam and
clipped-SGD (norm) ≤ 1.1× fused SGD.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision

from optim import ClipPolicyOptimizer, build_optimizer, get_optimizer_spec, list_optimizers
from optim import fused as fused_kernels

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
    "nsgdm": 8,  # read g (norm); read g, read+write m; read m (norm); read m, read+write x
    "clipped_adam": 8,  # read g (norm), then AdamW's 7
    # A policy adds a read of g (its norm) to its base, and a read+write of g when it clips
    # (in place, before the base's step): AutoClip clips ~90% of the steps (p = 10), ZClip
    # only on spikes, AGC whenever a unit exceeds its ratio (and reads x for the unit norms).
    "sgd_autoclip": 8,
    "sgd_zclip": 6,
    "sgd_agc": 9,
    "adamw_autoclip": 10,
    "adamw_zclip": 8,
}
# Implementations of the clipping optimizers: (fused flag, fused backend, inductor options).
IMPLS = {
    "foreach": (False, None, {}),
    "fused": (True, "triton", {}),
    "compile": (True, "compile", {}),
    "compile+combo": (True, "compile", {"combo_kernels": True}),
}
# The targets: (optimizer, baseline row, largest ratio).
# The targets per device type: {row: (baseline row, largest ratio)}.
TARGETS = {
    "cpu": {
        "clipped_sstm": ("sgd", 2.5),
        "clipped_sgd (norm)": ("clip+sgd", 1.1),
        # the heavy-tail family: NSGD-M / clipped Adam against SGD-momentum / AdamW (foreach),
        # and each clipping policy adds at most 20% to its base optimizer's step
        "nsgdm": ("sgd", 1.2),
        "clipped_adam": ("adamw", 1.2),
        "sgd_autoclip": ("sgd", 1.2),
        "sgd_zclip": ("sgd", 1.2),
        "sgd_agc": ("sgd", 1.2),
        "adamw_autoclip": ("adamw", 1.2),
        "adamw_zclip": ("adamw", 1.2),
    },
    "cuda": {"clipped_sstm": ("adam", 0.9), "clipped_sgd (norm)": ("sgd", 1.1)},
}
CLIPPING_ROWS = ("clipped_sgd", "clipped_sstm")


@dataclass
class Row:
    name: str
    seconds: float
    passes: int | None
    base: str = ""  # the registry name (and variant) without the implementation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cuda when available, plus cpu)")
    parser.add_argument("--param-sets", nargs="+", default=list(PARAM_SETS), choices=list(PARAM_SETS))
    parser.add_argument("--optimizers", nargs="+", default=None, help="registry names (default: all)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per optimizer (default: 20 cuda, 7 cpu)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sync-check", action="store_true", help="on CUDA, also run each step under set_sync_debug_mode('error')")
    parser.add_argument(
        "--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS),
        help="implementations of the clipping optimizers timed on CUDA (CPU: foreach only)",
    )  # fmt: skip


def _baselines(device: torch.device) -> dict[str, Callable]:
    fused = device.type == "cuda"

    def clip_then_sgd(params):
        sgd = torch.optim.SGD(params, lr=0.01, momentum=0.9, foreach=True)

        class ClipThenSGD:
            def step(self):
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                sgd.step()

        return ClipThenSGD()

    fast = {"fused": True} if fused else {"foreach": True}
    return {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, **fast),
        "clip+sgd": clip_then_sgd,
        "adam": lambda p: torch.optim.Adam(p, lr=1e-3, **({"fused": True} if fused else {"foreach": True})),
        "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, **({"fused": True} if fused else {"foreach": True})),
    }


def _candidates(names: list[str], impls: list[str], device: torch.device) -> dict[str, tuple[str, Callable]]:
    """label -> (base name, factory); the clipping optimizers once per implementation."""
    out = {}
    for name in names:
        if name in ("sgd", "adam", "adamw"):
            continue  # measured as baselines with explicit foreach/fused settings
        # A policy pair runs its torch base the way that base's baseline row does.
        policy_pair = isinstance(get_optimizer_spec(name).resolve(), type) and issubclass(
            get_optimizer_spec(name).resolve(), ClipPolicyOptimizer
        )
        variants = {name: ({"fused": True} if device.type == "cuda" else {"foreach": True}) if policy_pair else {}}
        if name == "clipped_sgd":
            variants["clipped_sgd (norm)"] = {"clipping": "norm", "clip_level": 1.0}
        clipping = name in CLIPPING_ROWS
        for base, extra in variants.items():
            for impl in impls if clipping and device.type == "cuda" else [None]:
                label = base if impl is None else f"{base} [{impl}]"
                out[label] = (base, lambda p, name=name, extra=extra, impl=impl: _build(name, p, extra, impl))
    return out


def _build(name: str, params, extra: dict, impl: str | None):
    if impl is None:
        return build_optimizer(name, params, **extra)
    fused, backend, options = IMPLS[impl]
    if backend is not None:
        fused_kernels.set_backend(backend, **options)
    return build_optimizer(name, params, fused=fused, **extra)


def measure(
    param_set: str, device: torch.device, names: list[str], repeats: int, warmup: int, sync_check: bool,
    impls: list[str] = ("foreach",),
):  # fmt: skip
    model = PARAM_SETS[param_set]().to(device)
    params = [p for p in model.parameters()]
    gen = torch.Generator(device=device).manual_seed(0)
    grads = [torch.randn(p.shape, generator=gen, device=device) * 1e-2 for p in params]
    rows, sync_free = [], {}
    candidates = {label: (label, make) for label, make in _baselines(device).items()}
    candidates.update(_candidates(names, list(impls), device))
    for label, (base, make) in candidates.items():
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.grad = g.clone()
        opt = make(params)  # selects the fused backend of this row, if any
        seconds = median_time(opt.step, device=device, warmup=warmup, repeats=repeats)
        rows.append(Row(label, seconds, _PASSES.get(base), base))
        if sync_check and device.type == "cuda" and label not in _baselines(device):
            torch.cuda.set_sync_debug_mode("error")
            try:
                opt.step()
                sync_free[label] = "yes"
            except RuntimeError as err:
                sync_free[label] = f"NO ({str(err).splitlines()[0][:60]})"
            finally:
                torch.cuda.set_sync_debug_mode("default")
        fused_kernels.set_backend("triton")
        del opt
    nbytes = sum(p.numel() * p.element_size() for p in params)
    return rows, nbytes, sync_free


def _target(row: Row, base: dict[str, float], device_type: str) -> str:
    """``≤ 2.5× sgd: yes (2.10)`` for the rows the issue sets a goal for, else ``-``."""
    targets = TARGETS.get(device_type, {})
    if row.base not in targets:
        return "-"
    baseline, limit = targets[row.base]
    ratio = row.seconds / base[baseline]
    return f"≤ {limit}× {baseline}: {'yes' if ratio <= limit else 'no'} ({ratio:.2f})"


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
            rows, nbytes, sync_free = measure(
                param_set, device, names, repeats, args.warmup, args.sync_check, getattr(args, "impls", ["foreach"])
            )
            base = {r.name: r.seconds for r in rows}
            header = ["optimizer", "ms/step", "× SGD", "× clip+SGD", "× Adam", "floor ms", "target"]
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
                    _target(r, base, device.type),
                ]
                if sync_free:
                    line.append(sync_free.get(r.name, "-"))
                table.append(line)
            print(f"### {param_set} ({nbytes / 4 / 1e6:.1f}M float32 parameters)\n")
            print(markdown_table(header, table) + "\n")
    return 0
