"""Shared pieces of the speed benchmarks: machine description, timing, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Sequence

import torch

__all__ = ["copy_bandwidth", "machine_info", "markdown_table", "median_time"]


def machine_info(device: torch.device | str = "cpu") -> str:
    """One line naming the machine and the versions a figure was measured with."""
    device = torch.device(device)
    import pytorch_lightning

    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        cpu = _cpu_model() or platform.processor() or platform.machine()
        where = f"{cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads"
    return (
        f"{where}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"pytorch-lightning {pytorch_lightning.__version__}"
    )


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], *, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of ``fn()`` in seconds, the device synchronised around each call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def best_time_per_item(fn: Callable[[int], object], count: int, repeats: int, *, warmup: int = 1) -> float:
    """Best over ``repeats`` passes of the mean seconds per call of ``fn(0..count-1)``,
    after ``fn(0..warmup-1)`` once (host code: no device synchronisation)."""
    for i in range(min(count, warmup)):
        fn(i)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def copy_bandwidth(device: torch.device, nbytes: int = 1 << 28) -> float:
    """Measured bytes/s of a large device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), device=device, warmup=2, repeats=5)
    return 2 * src.numel() * 4 / seconds


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are printed as given (format them first)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
