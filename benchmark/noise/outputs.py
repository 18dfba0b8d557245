"""The top-level outputs of ``python -m benchmark noise``: summary.json, the combined
table, CSV, trajectory and report over every task folder, and the printed timing.

:mod:`.cli` calls these after the tasks ran (:class:`~benchmark.noise.runner.TaskOutcome`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .report import (
    REPORT_FILE,
    SUMMARIES_FILE,
    SUMMARY_FILE,
    noise_section,
    read_summaries,
    verdict_lines,
    write_report,
)

__all__ = ["task_entry", "timing_lines", "write_top_level"]


def task_entry(outcome: Any, command: str) -> dict[str, Any]:
    """One task's entry of summary.json: verdicts, α per probe, settings, time, load.

    ``heavy_tailed``: at the last probed step, at some batch size (``heavy_tailed_batch_sizes``
    says which); ``heavy_tailed_at``: the steps where some batch size was.
    """
    rows = outcome.summaries
    last = max(s.step for s in rows)
    heavy_sizes = sorted({s.batch_size for s in rows if s.step == last and s.heavy_tailed})
    verdicts = verdict_lines(rows)
    return {
        "heavy_tailed": bool(heavy_sizes),
        "heavy_tailed_batch_sizes": heavy_sizes,
        "heavy_tailed_at": sorted({s.step for s in rows if s.heavy_tailed}),
        "verdict": verdicts[0] if len(verdicts) == 1 else "; ".join(verdicts),
        "verdicts": verdicts,
        "probes": [
            {"step": s.step, "batch_size": s.batch_size, "alpha": s.alpha.alpha if s.alpha else None,
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


def write_top_level(out: Path, outcomes: Sequence[Any], command: str, threads: int) -> None:
    """summary.json, the table, the JSON lines, the trajectory and noise_report.md of ``out``.

    They cover every task folder in ``out``, earlier invocations' included: a grid can
    call the command once per task (e.g. one ``--config`` stack per real dataset) with
    the same ``--out`` and get one report.
    """
    from datamodules.embedded.store import exclusive_lock

    # Several probes may share ``out`` at once (the grid runs them concurrently): the
    # read-merge-write of the top level is done under an exclusive lock.
    with exclusive_lock(out / ".lock"):
        _write_top_level(out, outcomes, command, threads)


def _write_top_level(out: Path, outcomes: Sequence[Any], command: str, threads: int) -> None:
    import torch

    path = out / SUMMARY_FILE
    tasks = json.loads(path.read_text(encoding="utf-8"))["tasks"] if path.is_file() else {}
    tasks.update({o.label: task_entry(o, command) for o in outcomes})
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
    summaries = [
        s for label in tasks if (out / label / SUMMARIES_FILE).is_file()
        for s in sorted(read_summaries(out / label), key=lambda r: (r.batch_size, r.step))
    ]
    write_report(summaries, out, plots=False)  # the per-probe plots are in the task folders
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / REPORT_FILE).write_text(noise_section(out), encoding="utf-8")


def timing_lines(outcomes: Sequence[Any], wall: float, threads: int) -> list[str]:
    """The printed timing: per task its parts, CPU time and load; then the total."""
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
