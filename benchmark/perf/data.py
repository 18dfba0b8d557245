"""``python -m benchmark.perf data``: data-loading speed of each DataModule on this CPU.

Two tables:

- **loaders**: decoded + augmented training images/s of each DataModule on its embedded
  dataset, with the settings ``make bench`` uses (read from ``benchmark/configs``,
  printed with the table), for 0, 1 and 2 DataLoader workers. The first batch (worker
  start-up) is not timed.
- **backends**: time per sample of each training augmentation pipeline in its
  albumentations and its torchvision-v2 version, in one thread (as in a worker), on
  decoded images: the embedded images, and synthetic images of the real datasets' sizes
  (ImageNet 500x375 -> 224, VOC 500x375 -> 512 crops, DIV2K 2040x1356 -> 96 patches).
  The DataModules default to the winner at the real sizes.

Timings are the best of ``--repeats`` runs, which is the most robust statistic on a
machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .common import best_time_per_item, machine_info, markdown_table  # noqa: E402

__all__ = ["EMBEDDED_SETTINGS", "add_arguments", "bench_settings", "run"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Used when the bench configs (benchmark/configs/<name>/{data,embedded}.yaml) are absent.
EMBEDDED_SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "imagenet": (
        "ImageNetDataModule",
        {
            "num_classes": 10, "train_crop_size": 56, "train_crop_scale": (0.35, 1.0),
            "val_resize_size": 64, "val_crop_size": 56, "batch_size": 32,
        },
    ),  # fmt: skip
    "voc": ("VOCDataModule", {"crop_size": 96, "scale_range": (0.75, 1.25), "batch_size": 8}),
    "div2k": ("DIV2KDataModule", {"scale": 4, "patch_size": 48, "repeat": 16, "batch_size": 16}),
}
# Loader plumbing is what this benchmark varies; the rest comes from the configs.
_NOT_SETTINGS = ("data_dir", "num_workers", "persistent_workers", "pin_memory", "val_batch_size")


def bench_settings(name: str) -> tuple[str, dict[str, Any]]:
    """DataModule class name and training keyword arguments that ``make bench`` uses.

    Read from ``benchmark/configs/<name>/data.yaml`` overlaid with ``embedded.yaml``;
    :data:`EMBEDDED_SETTINGS` when those files are missing.
    """
    import yaml

    files = [CONFIG_DIR / name / "data.yaml", CONFIG_DIR / name / "embedded.yaml"]
    if not all(f.is_file() for f in files):
        return EMBEDDED_SETTINGS[name]
    class_path, kwargs = "", {}
    for file in files:
        data = (yaml.safe_load(file.read_text()) or {}).get("data", {})
        class_path = data.get("class_path", class_path)
        kwargs.update(data.get("init_args", {}))
    cls_name = class_path.rsplit(".", 1)[-1] or EMBEDDED_SETTINGS[name][0]
    return cls_name, {k: v for k, v in kwargs.items() if k not in _NOT_SETTINGS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options on ``parser``."""
    parser.add_argument("--tables", nargs="+", default=["loaders", "backends"], choices=["loaders", "backends"])
    parser.add_argument("--datamodules", nargs="+", default=list(EMBEDDED_SETTINGS), choices=list(EMBEDDED_SETTINGS))
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2], help="DataLoader worker counts to time")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loader measurement")
    parser.add_argument("--samples", type=int, default=200, help="samples per backend measurement (embedded size)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")


# ---------------------------------------------------------------------------- loaders
def _datamodule(name: str, workers: int, **overrides: Any):
    import datamodules

    cls_name, kwargs = bench_settings(name)
    return getattr(datamodules, cls_name)(
        num_workers=workers, persistent_workers=False, pin_memory=False, **{**kwargs, **overrides}
    )


def _loader_rate(dm, batches: int, repeats: int) -> float:
    dm.prepare_data()
    dm.setup("fit")
    best = 0.0
    for _ in range(repeats):
        iterator = iter(dm.train_dataloader())
        next(iterator)  # worker start-up and the first fetch are not the steady state
        count = 0
        start = time.perf_counter()
        for _, batch in zip(range(batches), iterator):
            count += len(batch[0])
        best = max(best, count / (time.perf_counter() - start))
        del iterator
    return best


def loaders_table(names: list[str], workers: list[int], batches: int, repeats: int) -> str:
    """Markdown table of training-loader images/s per DataModule and worker count.

    DIV2K is also timed with ``cache_dir`` (decoded images memory-mapped), in a
    temporary folder filled before timing. The settings follow the table.
    """
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="clipbench-perf-") as tmp:
        for name in names:
            cls_name, kwargs = bench_settings(name)
            notes.append(f"- {cls_name}: " + ", ".join(f"{k}={v}" for k, v in kwargs.items()))
            variants: list[tuple[str, dict[str, Any]]] = [(cls_name, {})]
            if name == "div2k":
                variants.append((f"{cls_name} + cache_dir", {"cache_dir": os.path.join(tmp, "div2k")}))
            for label, overrides in variants:
                if overrides:  # fill the cache first: its steady state is what matters
                    _loader_rate(_datamodule(name, 0, **overrides, repeat=1), batches=10**6, repeats=1)
                for w in workers:
                    dm = _datamodule(name, w, **overrides)
                    rows.append([label, dm.backend, w, f"{_loader_rate(dm, batches, repeats):,.0f}"])
    table = markdown_table(["DataModule", "backend", "workers", "images/s"], rows)
    return table + "\n\nSettings (from benchmark/configs/<task>/{data,embedded}.yaml):\n" + "\n".join(notes)


# --------------------------------------------------------------------------- backends
@dataclass
class _Case:
    pipeline: str
    inputs_label: str
    factory: Callable[[str], Callable[..., object]]  # backend -> transform
    inputs: list[Any]  # a tensor, or a tuple of arguments per sample
    count: int  # samples per timed run

    def runner(self, backend: str) -> Callable[[int], object]:
        transform = self.factory(backend)
        if isinstance(self.inputs[0], tuple):
            return lambda i: transform(*self.inputs[i % len(self.inputs)])
        return lambda i: transform(self.inputs[i % len(self.inputs)])


def _smooth_image(height: int, width: int, rng: np.random.Generator) -> torch.Tensor:
    coarse = (rng.random((max(height // 16, 2), max(width // 16, 2), 3)) * 255).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(np.clip(image, 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


def _embedded_inputs(name: str, count: int) -> list[Any]:
    """Decoded embedded training samples: images, (image, mask) or (LR, HR)."""
    from datamodules.datasets import load_pair
    from datamodules.images import read_image, read_mask

    dm = _datamodule(name, 0)
    dm.prepare_data()
    dm.setup("fit")
    samples = dm.train_dataset.samples[:count]
    if name == "imagenet":
        return [read_image(path) for path, _ in samples]
    if name == "voc":
        return [(read_image(image), read_mask(mask)) for image, mask in samples]
    return [load_pair(hr, lr, dm.scale) for hr, lr in samples]


def _cases(names: list[str], samples: int) -> list[_Case]:
    """Each pipeline at the bench's embedded settings and at the real protocol's defaults."""
    from datamodules.transforms import ClassificationTransform, PairedPatchTransform, SegmentationTransform

    rng = np.random.default_rng(0)
    cases = []
    if "imagenet" in names:
        pipeline = "ImageNet train: RandomResizedCrop + flip + normalise"
        kw = bench_settings("imagenet")[1]
        crop, scale = kw.get("train_crop_size", 224), tuple(kw.get("train_crop_scale", (0.08, 1.0)))
        cases.append(_Case(
            pipeline, f"embedded 64-88 px -> {crop}",
            lambda b: ClassificationTransform("train", crop, scale=scale, backend=b, seed=0),
            _embedded_inputs("imagenet", samples), samples,
        ))  # fmt: skip
        big = [_smooth_image(375, 500, rng) for _ in range(8)]
        cases.append(_Case(
            pipeline, "500x375 -> 224", lambda b: ClassificationTransform("train", 224, backend=b, seed=0), big, 40
        ))  # fmt: skip
    if "voc" in names:
        pipeline = "VOC train: rescale + pad (mask 255) + crop + flip + normalise"
        kw = bench_settings("voc")[1]
        crop, scale_range = kw.get("crop_size", 512), tuple(kw.get("scale_range", (0.5, 2.0)))
        cases.append(_Case(
            pipeline, f"embedded ~125x105, x{scale_range[0]}-{scale_range[1]} -> {crop}",
            lambda b: SegmentationTransform("train", crop, scale_range=scale_range, backend=b, seed=0),
            _embedded_inputs("voc", samples), samples,
        ))  # fmt: skip
        big = [(_smooth_image(375, 500, rng), (rng.random((375, 500)) * 21).astype(np.uint8)) for _ in range(4)]
        cases.append(_Case(
            pipeline, "500x375, x0.5-2 -> 512", lambda b: SegmentationTransform("train", 512, backend=b, seed=0), big, 20
        ))  # fmt: skip
    if "div2k" in names:
        pipeline = "DIV2K train: aligned patch + 8 flips/rot90"
        kw = bench_settings("div2k")[1]
        s, patch = kw.get("scale", 4), kw.get("patch_size", 96)
        cases.append(_Case(
            pipeline, f"embedded 192-240 px, x{s}, HR patch {patch}",
            lambda b: PairedPatchTransform("train", s, patch, backend=b, seed=0),
            _embedded_inputs("div2k", samples), samples,
        ))  # fmt: skip
        hr = _smooth_image(1356, 2040, rng)
        lr = torch.nn.functional.interpolate(hr[None].float(), scale_factor=0.25, mode="area")[0].to(torch.uint8)
        cases.append(_Case(
            pipeline, "2040x1356, x4, HR patch 96", lambda b: PairedPatchTransform("train", 4, 96, backend=b, seed=0),
            [(lr, hr)], samples,
        ))  # fmt: skip
    return cases


def backends_table(names: list[str], samples: int, repeats: int) -> str:
    """Markdown table: per pipeline and input size, µs/sample with each backend, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cv2.setNumThreads(0)
    rows = []
    try:
        for case in _cases(names, samples):
            alb = best_time_per_item(case.runner("albumentations"), case.count, repeats, warmup=5)
            tv = best_time_per_item(case.runner("torchvision"), case.count, repeats, warmup=5)
            winner = "albumentations" if alb < tv else "torchvision v2"
            rows.append(
                [
                    case.pipeline, case.inputs_label, f"{alb * 1e6:,.0f}", f"{tv * 1e6:,.0f}", winner,
                    f"{max(alb, tv) / min(alb, tv):.2f}x",
                ]  # fmt: skip
            )
    finally:
        torch.set_num_threads(threads)
    return markdown_table(
        ["pipeline", "inputs", "albumentations µs/sample", "torchvision v2 µs/sample", "faster", "by"], rows
    )


def run(args: argparse.Namespace) -> int:
    """Print the requested tables as markdown; return 0."""
    import albumentations
    import PIL
    import torchvision

    print(f"Machine: {machine_info('cpu')}")
    print(
        f"Libraries: torchvision {torchvision.__version__}, albumentations {albumentations.__version__}, "
        f"opencv {cv2.__version__}, pillow {PIL.__version__}"
    )
    if "loaders" in args.tables:
        print("\nTraining loader throughput (decode + augment + collate), embedded datasets:\n")
        print(loaders_table(args.datamodules, args.workers, args.batches, args.repeats))
    if "backends" in args.tables:
        print("\nAugmentation backends, one thread, decoded inputs (lower is faster):\n")
        print(backends_table(args.datamodules, args.samples, args.repeats))
    return 0
