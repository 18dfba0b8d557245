"""``python -m benchmark.perf input``: can the ImageNet input pipeline feed the GPU?

The H100 trains ResNet-18 (224 px, batch 256, bf16, channels_last) at about 11.9k
images/s eager and 15.9k compiled (published reference figures). This command measures what the
ImageNet DataModule's training path costs per image on one core, on real-size JPEGs
(generated: ``--count`` files of ``--size``, quality ``--quality``, about ImageNet's mean
file size), and how many cores those two rates need:

- **per core**: read, decode (``datamodules.images.read_image``, libjpeg-turbo) and the
  train transform (``ClassificationTransform("train", 224)``, each backend), one thread,
  best of ``--repeats``;
- **workers**: the DataModule's dataset in a ``DataLoader`` with 1..N workers, to check
  that the per-core rate scales on this machine;
- **GPU decode** (CUDA only): :mod:`datamodules.gpu_decode`, batched nvJPEG decode plus
  the same augmentation on the GPU, from encoded bytes in memory.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .common import best_time_per_item, machine_info, markdown_table

__all__ = ["TARGETS", "add_arguments", "make_jpegs", "run"]

TARGETS = {"eager": 11_900, "compiled": 15_900}  # ResNet-18 images/s on one H100 (published reference figures)
GPU_MACHINE_CORES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register this command's options on ``parser``."""
    parser.add_argument("--count", type=int, default=32, help="JPEGs to generate")
    parser.add_argument("--size", default="500x375", help="their size, WxH (ImageNet's typical 500x375)")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    parser.add_argument("--workers", nargs="+", type=int, default=None, help="DataLoader workers (default: 1..cores)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto: where the GPU-decode path is timed")
    parser.add_argument("--gpu-batch", type=int, default=256)


def make_jpegs(folder: str | Path, count: int, size: tuple[int, int] = (500, 375), quality: int = 90,
               seed: int = 0) -> list[Path]:  # fmt: skip
    """Write ``count`` photo-like JPEGs (smooth shapes plus fine texture, so that they
    compress like photographs, not like flat colour) and return their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    paths = []
    for i in range(count):
        coarse = rng.random((height // 24 + 2, width // 24 + 2, 3))
        image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 16, (height, width, 3))
        path = Path(folder) / f"img{i:04d}.JPEG"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=quality)
        paths.append(path)
    return paths


def per_core_table(paths: list[Path], repeats: int) -> tuple[str, dict[str, float]]:
    """Seconds per image of each stage in one thread; returns the table and the totals."""
    import cv2
    from torchvision.io import read_file

    from datamodules.images import read_image
    from datamodules.transforms import ClassificationTransform

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker = one core
    cv2.setNumThreads(0)
    try:
        n = len(paths)
        decoded = [read_image(p) for p in paths]
        read = best_time_per_item(lambda i: read_file(str(paths[i])), n, repeats)
        decode = best_time_per_item(lambda i: read_image(paths[i]), n, repeats)
        rows, totals = [["read the file", read, "-"], ["decode (torchvision.io / libjpeg-turbo)", decode, "-"]], {}
        for backend in ("torchvision", "albumentations"):
            transform = ClassificationTransform("train", 224, backend=backend, seed=0)
            augment = best_time_per_item(lambda i: transform(decoded[i]), n, repeats)
            total = best_time_per_item(lambda i: transform(read_image(paths[i])), n, repeats)
            totals[backend] = total
            rows += [[f"train transform, {backend}", augment, "-"], [f"**decode + transform, {backend}**", total, "x"]]
    finally:
        torch.set_num_threads(threads)
    table = []
    for label, seconds, total in rows:
        line = [label, f"{seconds * 1e6:,.0f}", f"{1 / seconds:,.0f}"]
        line += [f"{TARGETS[k] * seconds:.1f}" if total == "x" else "-" for k in TARGETS]
        table.append(line)
    header = ["stage (one thread)", "µs/image", "images/s/core"] + [f"cores for {v / 1e3:.1f}k/s ({k})" for k, v in
                                                                    TARGETS.items()]  # fmt: skip
    return markdown_table(header, table), totals


def workers_table(paths: list[Path], workers: list[int], repeats: int) -> str:
    """Images/s of the DataModule's training dataset in a DataLoader, by worker count."""
    from torch.utils.data import DataLoader

    from datamodules.datasets import ImageClassificationDataset
    from datamodules.transforms import ClassificationTransform

    samples = [(str(p), 0) for p in paths] * 8
    rows = []
    for w in workers:
        dataset = ImageClassificationDataset(samples, ClassificationTransform("train", 224, backend="torchvision"))
        loader = DataLoader(dataset, batch_size=32, num_workers=w, persistent_workers=w > 0)
        best = 0.0
        for _ in range(repeats):
            iterator = iter(loader)
            next(iterator)  # start-up is not the steady state
            start, count = time.perf_counter(), 0
            for images, _ in iterator:
                count += len(images)
            best = max(best, count / (time.perf_counter() - start))
        rows.append([w, f"{best:,.0f}", f"{best / max(w, 1):,.0f}"])
    return markdown_table(["workers", "images/s", "per worker"], rows)


def gpu_table(paths: list[Path], batch: int, device: torch.device, repeats: int) -> str:
    """Images/s of batched nvJPEG decode, and of decode + augmentation, on ``device``."""
    from torchvision.io import read_file

    from datamodules.gpu_decode import GPUTrainAugment

    data = [read_file(str(paths[i % len(paths)])) for i in range(batch)]
    augment = GPUTrainAugment(224, device=device, channels_last=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn: Callable[[], object]) -> float:
        fn()  # warm-up: nvJPEG handles, the allocator
        best = float("inf")
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best = min(best, time.perf_counter() - start)
        return batch / best

    decode = timed(lambda: augment.decode(data))
    decoded = augment.decode(data)
    crop = timed(lambda: augment.augment(decoded))
    both = timed(lambda: augment.augment(augment.decode(data)))
    rows = [["decode (nvJPEG, batched)", f"{decode:,.0f}"], ["crop + resize + flip + normalise", f"{crop:,.0f}"],
            ["**decode + augment**", f"{both:,.0f}"]]  # fmt: skip
    return markdown_table([f"GPU path on {device.type}, batch {batch}", "images/s"], rows)


def run(args: argparse.Namespace) -> int:
    """Print the tables and the verdict as markdown; return 0."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    workers = args.workers or list(range(1, (os.cpu_count() or 1) + 1))
    print(f"\n## Input pipeline: ImageNet train transform at 224 px\n\n{machine_info('cpu')}\n")
    with tempfile.TemporaryDirectory(prefix="clipbench-perf-input-") as folder:
        paths = make_jpegs(folder, args.count, (width, height), args.quality)
        mean_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        print(f"{len(paths)} generated JPEGs, {width}x{height}, quality {args.quality}, mean {mean_kb:.0f} KiB "
              "(ImageNet's train JPEGs average about 110 KiB)\n")  # fmt: skip
        table, totals = per_core_table(paths, args.repeats)
        print(table)
        best = min(totals.values())
        need = {k: v * best for k, v in TARGETS.items()}
        verdict = " and ".join(f"{v / 1e3:.1f}k/s needs {need[k]:.0f} cores" for k, v in TARGETS.items())
        enough = all(n <= GPU_MACHINE_CORES - 1 for n in need.values())  # one core drives the GPU
        print(f"\nWith the faster backend, {verdict}: the GPU machine's {GPU_MACHINE_CORES} cores (one kept for the "
              f"training process) {'can' if enough else 'cannot'} feed that rate by CPU decoding, if this CPU's "
              "per-core rate carries over.\n")  # fmt: skip
        print(workers_table(paths, workers, args.repeats))
        if cuda:
            print("\n" + gpu_table(paths, args.gpu_batch, torch.device("cuda"), args.repeats))
        else:
            print("\nGPU decode path (datamodules.gpu_decode): not measured, no CUDA device here.")
    return 0
