"""The task-independent half of ``python -m benchmark noise``: files in, files and text out.

The command (phase 2, ``benchmark/noise/cli.py``) builds each task, probes it at
initialisation and after some training, and hands the summaries to :func:`write_report`;
``make bench`` can re-render the table from the JSON with :func:`read_summaries`.

Layout of a results folder (``out_dir``)::

    noise_summaries.jsonl       one NoiseSummary per line (every field, norms included)
    noise_table.md              the table and the heavy-tail rule
    alpha_trajectory.png        α with its interval against the step, one line per task
    <task>_step<step>_hist.png  histogram of the noise norms + Gaussian reference
    <task>_step<step>_qq.png    QQ plot against the Gaussian reference
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .plots import plot_alpha_trajectory, save_plots, write_table
from .summary import NoiseSummary

__all__ = ["SUMMARIES_FILE", "TABLE_FILE", "TRAJECTORY_FILE", "read_summaries", "verdict_lines", "write_report"]

SUMMARIES_FILE = "noise_summaries.jsonl"
TABLE_FILE = "noise_table.md"
TRAJECTORY_FILE = "alpha_trajectory.png"


def write_report(summaries: Sequence[NoiseSummary], out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
    """Write the JSON lines, the table, the trajectory and (optionally) per-probe plots.

    Args:
        summaries: the probes, any order, several tasks and steps.
        out_dir: the results folder (created).
        plots: also write the histogram and QQ plot of every probe.

    Returns:
        ``{"summaries": ..., "table": ..., "trajectory": ...}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / SUMMARIES_FILE
    jsonl.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in summaries), encoding="utf-8")
    if plots:
        for s in summaries:
            save_plots(s, out)
    return {
        "summaries": jsonl,
        "table": write_table(summaries, out / TABLE_FILE),
        "trajectory": plot_alpha_trajectory(summaries, out / TRAJECTORY_FILE),
    }


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
    """One line per task: the verdict at its last probe and how α moved.

    Example: ``resnet18: heavy-tailed: yes at step 200 (α 1.52 [1.31, 1.78]); α 1.98 → 1.52
    over steps 0 → 200``.
    """
    tasks: dict[str, list[NoiseSummary]] = {}
    for s in summaries:
        tasks.setdefault(s.task or "noise", []).append(s)
    lines = []
    for task, rows in tasks.items():
        rows = sorted(rows, key=lambda r: -1 if r.step is None else r.step)
        last = rows[-1]
        a = last.alpha
        alpha = f"α {a.alpha:.2f} [{a.low:.2f}, {a.high:.2f}]" if a else "no α estimate"
        line = f"{task}: heavy-tailed: {'yes' if last.heavy_tailed else 'no'} at step {last.step} ({alpha})"
        trail = [r for r in rows if r.alpha is not None]
        if len(trail) > 1:
            line += (
                f"; α {' → '.join(f'{r.alpha.alpha:.2f}' for r in trail)}"
                f" over steps {' → '.join(str(r.step) for r in trail)}"
            )
        lines.append(line)
    return lines
