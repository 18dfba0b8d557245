"""The task-independent half of ``python -m benchmark noise``: files in, files and text out.

The command (:mod:`benchmark.noise.cli`) builds each task, probes it at initialisation
and after some training, and hands the summaries to :func:`write_report`; the ``make
bench`` report embeds the result with :func:`noise_section`.

Layout of a results folder (``out_dir``)::

    noise_summaries.jsonl       one NoiseSummary per line (every field, norms included)
    noise_table.md              the table and the heavy-tail rule
    noise_table.csv             the table's numbers, one row per (task, batch size, step)
    alpha_trajectory.png        α with its interval against the step, one line per task
                                and batch size
    <task>_step<step>_hist.png  histogram of the noise norms + Gaussian reference
    <task>_step<step>_qq.png    QQ plot against the Gaussian reference (both named
                                <task>_b<B>_step<step>_... for a task probed at several
                                batch sizes)

The command puts the per-probe plots into ``<task>/`` subfolders and adds
``summary.json`` (settings, timing, load) and ``noise_report.md`` (:func:`noise_section`).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .plots import plot_alpha_trajectory, save_plots, write_table
from .summary import ALPHA_THRESHOLD, NoiseSummary

__all__ = [
    "CSV_FILE",
    "REPORT_FILE",
    "SUMMARIES_FILE",
    "SUMMARY_FILE",
    "TABLE_FILE",
    "TRAJECTORY_FILE",
    "find_noise_results",
    "multi_batch_tasks",
    "noise_section",
    "read_summaries",
    "verdict_lines",
    "write_csv",
    "write_report",
]

SUMMARIES_FILE = "noise_summaries.jsonl"
TABLE_FILE = "noise_table.md"
CSV_FILE = "noise_table.csv"
TRAJECTORY_FILE = "alpha_trajectory.png"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "noise_report.md"


def write_report(summaries: Sequence[NoiseSummary], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write the JSON lines, the table, the trajectory and (optionally) per-probe plots.

    Args:
        summaries: the probes, any order, several tasks and steps.
        out_dir: the results folder (created).
        plots: also write the histogram and QQ plot of every probe.

    Returns:
        ``{"summaries": ..., "table": ..., "csv": ..., "trajectory": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / SUMMARIES_FILE
    jsonl.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in summaries), encoding="utf-8")
    if plots:
        tagged = multi_batch_tasks(summaries)
        for s in summaries:
            save_plots(s, out, with_batch_size=s.task in tagged)
    return {
        "summaries": jsonl,
        "table": write_table(summaries, out / TABLE_FILE),
        "csv": write_csv(summaries, out / CSV_FILE),
        "trajectory": plot_alpha_trajectory(summaries, out / TRAJECTORY_FILE),
    }


#: The columns of ``noise_table.csv``: the key (task, batch size, step), then the numbers.
CSV_COLUMNS = (
    "task", "batch_size", "step", "num_batches", "subset_size", "alpha", "alpha_low", "alpha_high",
    "alpha_source", "alpha_blocks", "hill", "hill_gauss", "kurtosis", "kurtosis_gauss", "max_median",
    "max_median_gauss", "max_median_gauss_q95", "noise_to_gradient", "heavy_tailed", "time_s",
)


def write_csv(summaries: Iterable[NoiseSummary], path: str | Path) -> Path:
    """One row per probe with :data:`CSV_COLUMNS` (empty cells for a missing α); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for s in summaries:
            a, g = s.alpha, s.gaussian_stats
            writer.writerow([
                s.task, s.batch_size, s.step, s.num_batches, s.subset_size,
                *((a.alpha, a.low, a.high) if a else ("", "", "")), s.alpha_source,
                "" if s.alpha_blocks is None else s.alpha_blocks, s.hill, g.hill, s.kurtosis, g.kurtosis,
                s.max_median, g.max_median, g.max_median_q95, s.noise_to_gradient, s.heavy_tailed,
                round(s.time_s, 2),
            ])
    return path


def multi_batch_tasks(summaries: Iterable[NoiseSummary]) -> set[str | None]:
    """The tasks probed at more than one batch size (their file names carry the size)."""
    sizes: dict[str | None, set[int]] = {}
    for s in summaries:
        sizes.setdefault(s.task, set()).add(s.batch_size)
    return {task for task, seen in sizes.items() if len(seen) > 1}


def read_summaries(path: str | Path) -> list[NoiseSummary]:
    """Load a ``noise_summaries.jsonl`` (a file, or the folder holding it).

    Raises:
        FileNotFoundError: if there is no such file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARIES_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    return [NoiseSummary.from_dict(json.loads(line)) for line in lines if line.strip()]


def verdict_lines(summaries: Sequence[NoiseSummary]) -> list[str]:
    """One line per task and batch size: the verdict at the last probe and how α moved.

    Example: ``resnet18: heavy-tailed: yes at step 200 (α 1.52 [1.31, 1.78]) with batch size
    32; α 1.98 → 1.52 over steps 0 → 200``. Lines follow the tasks' first appearance, then
    the batch size.
    """
    groups: dict[tuple[str, int], list[NoiseSummary]] = {}
    for s in summaries:
        groups.setdefault((s.task or "noise", s.batch_size), []).append(s)
    order = {task: i for i, (task, _) in reversed(list(enumerate(groups)))}
    lines = []
    for (task, batch_size), rows in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
        rows = sorted(rows, key=lambda r: -1 if r.step is None else r.step)
        last = rows[-1]
        a = last.alpha
        alpha = f"α {a.alpha:.2f} [{a.low:.2f}, {a.high:.2f}]" if a else "no α estimate"
        line = (f"{task}: heavy-tailed: {'yes' if last.heavy_tailed else 'no'} at step {last.step} ({alpha}) "
                f"with batch size {batch_size}")
        trail = [r for r in rows if r.alpha is not None]
        if len(trail) > 1:
            line += (
                f"; α {' → '.join(f'{r.alpha.alpha:.2f}' for r in trail)}"
                f" over steps {' → '.join(str(r.step) for r in trail)}"
            )
        lines.append(line)
    return lines


def find_noise_results(path: str | Path) -> Path | None:
    """The gradient-noise results folder at or below ``path``, or None.

    Looked for, in order: ``path`` itself (it holds ``noise_summaries.jsonl``),
    ``path/noise``, then the most recently written folder directly inside ``path/noise/``
    or ``path/`` that holds one. So ``find_noise_results("results")``
    finds the latest ``python -m benchmark noise`` run (``results/noise/<timestamp>/``),
    and a grid that writes its noise results into ``<report dir>/noise/`` is found from
    the report folder.
    """
    path = Path(path)
    for candidate in (path, path / "noise"):
        if (candidate / SUMMARIES_FILE).is_file():
            return candidate
    for parent in (path / "noise", path):
        if parent.is_dir():
            runs = [p for p in parent.iterdir() if (p / SUMMARIES_FILE).is_file()]
            if runs:
                return max(runs, key=lambda p: (p / SUMMARIES_FILE).stat().st_mtime)
    return None


def noise_section(
    results: str | Path,
    *,
    heading: str = "## Gradient noise: is each task heavy-tailed?",
    relative_to: str | Path | None = None,
) -> str:
    """The gradient-noise part of a markdown report, or ``""`` when there are no results.

    For the ``make bench`` report (``benchmark/report.py``): ``noise_section(out.parent)``
    or ``noise_section("results")`` embeds the latest ``python -m benchmark noise`` run,
    ``noise_section(out, relative_to=out)`` a grid's own ``<out>/noise/``. The same text is
    the ``noise_report.md`` the command writes.

    Args:
        results: a noise results folder, or a folder to search (:func:`find_noise_results`).
        heading: the section's first line ("" for none).
        relative_to: the folder the report will live in; links to the plots are made
            relative to it (default: the noise results folder itself).

    Returns:
        Markdown: where the numbers come from, the table, the rule, one verdict line per
        task (how α moved), the time it took and the α-trajectory plot.
    """
    from .plots import markdown_table

    folder = find_noise_results(results)
    if folder is None:
        return ""
    summaries = read_summaries(folder)
    if not summaries:
        return ""
    meta: dict[str, Any] = {}
    if (folder / SUMMARY_FILE).is_file():
        meta = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    base = Path(relative_to) if relative_to is not None else folder
    link = Path(os.path.relpath(folder, base))

    lines = [heading, ""] if heading else []
    lines += [_source_line(folder, meta), "", markdown_table(summaries).rstrip(), ""]
    lines += [
        (f"Heavy-tailed = the whole α interval lies below {ALPHA_THRESHOLD} *and* max/median exceeds the 95th "
         "percentile of Gaussian noise with the same covariance moments (in brackets: the Gaussian values). "
         "\"no\" means \"not shown with K mini-batches\", not \"Gaussian\"."),
        "",
    ]
    lines += [f"- {line}" for line in verdict_lines(summaries)]
    timing = _timing_line(meta)
    if timing:
        lines += ["", timing]
    prefix = "" if link == Path(".") else f"{link.as_posix()}/"
    if (folder / TRAJECTORY_FILE).is_file():
        lines += ["", f"![α during training]({prefix}{TRAJECTORY_FILE})"]
    # The command writes the per-probe plots into <task>/ folders, write_report next to the table.
    where = prefix + ("<task>/" if any(folder.glob("*/*_hist.png")) else "")
    size = "_b<batch size>" if multi_batch_tasks(summaries) else ""
    lines += ["", f"Histogram and QQ plot of every probe: `{where}<task>{size}_step<step>_{{hist,qq}}.png`."]
    return "\n".join(lines) + "\n"


def _source_line(folder: Path, meta: dict[str, Any]) -> str:
    """Where the numbers come from: the command, K, the batch sizes, the probe schedule."""
    source = f"From `{folder}`"
    tasks = meta.get("tasks", {})
    entries = list(tasks.values())
    if not entries or not all("settings" in e for e in entries):
        return source + "."
    first = entries[0]["settings"]
    steps = first["train_steps"]
    sizes = "; ".join(f"{name} {_sizes_text(entry['settings'])}" for name, entry in tasks.items())
    source += (
        f" (`{entries[0].get('command', 'python -m benchmark noise')}`): K = {first['num_batches']} noise "
        f"mini-batches per probe, drawn from a fixed subset of the training set without augmentation "
        f"(batch sizes: {sizes}); "
        + (f"probes at initialisation and after {steps} {first.get('optimizer') or 'training'} steps" if steps
           else "probes at initialisation only")
        + (f", every {first['probe_every']} steps" if first.get("probe_every") else "")
    )
    keys = ("num_batches", "train_steps", "probe_every", "optimizer")
    if any(e["settings"].get(k) != first.get(k) for e in entries for k in keys):
        source += "; the settings differ between tasks (summary.json)"
    return source + "."


def _timing_line(meta: dict[str, Any]) -> str | None:
    """``Time: <task> <s> s, ...; total ... (cores, threads, load)``, or None without timings."""
    tasks = meta.get("tasks", {})
    if not tasks or not all("time" in t for t in tasks.values()):
        return None
    times = ", ".join(f"{name} {t['time']['total_s']:.0f} s" for name, t in tasks.items())
    machine, load = meta.get("machine", {}), meta.get("load_1min")
    where = f"{machine.get('cpu_count', '?')} CPU cores, {machine.get('torch_threads', '?')} torch thread(s)"
    if machine.get("cuda"):
        where += f", {machine['cuda']}"
    if load:
        where += f"; 1-min load average {load['min']:.1f}-{load['max']:.1f}"
    return f"Time: {times}; total {meta.get('total_s', 0):.0f} s ({where})."


def _sizes_text(settings: dict[str, Any]) -> str:
    """``8 and 32 (training batch 32)``; results written before batch sizes were a list: ``32``."""
    sizes = settings.get("batch_sizes") or [settings["batch_size"]]
    text = " and ".join(", ".join(str(b) for b in sizes).rsplit(", ", 1))
    train = settings.get("train_batch_size")
    return text + (f" (training batch {train})" if train else "")
