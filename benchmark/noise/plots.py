"""Pictures and tables of gradient noise: histogram, QQ plot, α over training, markdown.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly: no
pyplot, so nothing here touches the global backend or leaks figures in a long run.

How to read them:

* **Histogram** of the K noise norms ‖g_b − ∇f(x)‖ (bars) with the Gaussian reference
  (curve, same tr Σ and tr Σ²; see :mod:`benchmark.noise.reference`). Gaussian noise:
  the bars sit under the curve. Heavy tails: a bulk to the *left* of the curve (tr Σ is
  inflated by a few huge norms) and isolated bars far to the right.
* **QQ plot**: sorted norms against the reference quantiles. On the diagonal: Gaussian.
  Bending up at the right end: heavier tail than Gaussian; the size of the last points'
  excursion is the max/median excess of the table.
* **α over training**: the α estimate with its interval per probe, one line per task
  and noise batch size; the dashed lines are 2 (Gaussian) and 1.9 (the heavy-tail
  threshold on the upper bound).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .summary import ALPHA_THRESHOLD, NoiseSummary

__all__ = [
    "markdown_table",
    "plot_alpha_trajectory",
    "plot_norm_histogram",
    "plot_qq",
    "plot_stem",
    "save_plots",
    "write_table",
]

#: Above this max/median ratio the norm axes switch to a log scale.
_LOG_SCALE_RATIO = 10.0


def _label(s: NoiseSummary) -> str:
    parts = [s.task or "noise", f"b = {s.batch_size}"]
    if s.step is not None:
        parts.append(f"step {s.step}")
    if s.alpha is not None:
        parts.append(f"α = {s.alpha.alpha:.2f} [{s.alpha.low:.2f}, {s.alpha.high:.2f}]")
    return ", ".join(parts)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def plot_norm_histogram(summary: NoiseSummary, path: str | Path) -> Path:
    """Histogram of the noise norms with the Gaussian reference density overlaid.

    Args:
        summary: a :class:`~benchmark.noise.summary.NoiseSummary` (its ``norms`` and
            ``gaussian``).
        path: the PNG to write (parent folders are created).

    Returns:
        The path written.
    """
    norms = np.asarray(summary.norms, dtype=np.float64)
    ref = summary.gaussian
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    log_x = summary.max_median > _LOG_SCALE_RATIO
    lo = min(norms.min(), float(ref.ppf(0.001)))
    hi = max(norms.max(), float(ref.ppf(0.999)))
    bins = np.geomspace(norms.min(), norms.max(), 30) if log_x else min(30, max(8, len(norms) // 3))
    heights, _, _ = ax.hist(norms, bins=bins, density=True, color="tab:blue", alpha=0.6,
                            label=f"‖g_b − ∇f‖, K = {len(norms)}")
    grid = np.geomspace(lo, hi, 400) if log_x else np.linspace(lo, hi, 400)
    pdf = ref.pdf(grid)
    ax.plot(grid, pdf, color="tab:red", lw=2, label=f"Gaussian reference (ν_eff = {ref.dof:.3g})")
    ax.axvline(float(np.median(norms)), color="tab:blue", ls=":", lw=1)
    ax.axvline(float(ref.ppf(0.5)), color="tab:red", ls=":", lw=1)
    top = float(np.max(heights)) if len(heights) else 1.0
    if np.nanmax(pdf) > 3 * top:
        # A high effective dimension makes the reference a spike; keep the bars readable.
        ax.set_ylim(0, 1.3 * top)
        ax.annotate("reference peak off scale", xy=(float(ref.ppf(0.5)), 1.25 * top),
                    ha="center", va="top", fontsize=8, color="tab:red")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("noise norm")
    ax.set_ylabel("density")
    ax.set_title(_label(summary), fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_qq(summary: NoiseSummary, path: str | Path) -> Path:
    """QQ plot of the sorted noise norms against the Gaussian reference's quantiles.

    Args:
        summary: a :class:`~benchmark.noise.summary.NoiseSummary`.
        path: the PNG to write.

    Returns:
        The path written.
    """
    norms = np.sort(np.asarray(summary.norms, dtype=np.float64))
    n = len(norms)
    theo = summary.gaussian.ppf((np.arange(1, n + 1) - 0.5) / n)  # Hazen plotting positions
    fig = Figure(figsize=(4.8, 4.8))
    ax = fig.add_subplot()
    ax.scatter(theo, norms, s=12, color="tab:blue", label="noise norms")
    lo, hi = min(theo.min(), norms.min()), max(theo.max(), norms.max())
    ax.plot([lo, hi], [lo, hi], color="tab:red", lw=1, label="y = x (Gaussian)")
    if summary.max_median > _LOG_SCALE_RATIO:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("Gaussian reference quantile")
    ax.set_ylabel("empirical quantile")
    ax.set_title(_label(summary), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_alpha_trajectory(summaries: Sequence[NoiseSummary], path: str | Path) -> Path:
    """α with its interval against the training step, one line per task and batch size.

    Args:
        summaries: probes with ``step`` set (others are skipped).
        path: the PNG to write.

    Returns:
        The path written.
    """
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    lines: dict[tuple[str, int], list[NoiseSummary]] = {}
    for s in summaries:
        if s.alpha is not None and s.step is not None:
            lines.setdefault((s.task or "noise", s.batch_size), []).append(s)
    steps = [s.step for rows in lines.values() for s in rows]
    span = max(steps) - min(steps) if steps else 0
    for i, ((task, batch_size), rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r.step)
        # Lines probed at the same steps: shifted apart a little so that the intervals stay readable.
        dodge = (i - (len(lines) - 1) / 2) * 0.012 * max(span, 1)
        x = np.array([r.step for r in rows], dtype=np.float64) + dodge
        y = np.array([r.alpha.alpha for r in rows])
        err = np.array([[r.alpha.alpha - r.alpha.low for r in rows], [r.alpha.high - r.alpha.alpha for r in rows]])
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{task}, b = {batch_size}")
    ax.axhline(2.0, color="gray", ls="--", lw=1, label="Gaussian (α = 2)")
    ax.axhline(ALPHA_THRESHOLD, color="tab:red", ls="--", lw=1, label=f"threshold {ALPHA_THRESHOLD}")
    ax.set_ylim(0, 2.1)
    ax.set_xlabel("training step")
    ax.set_ylabel("tail index α")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_stem(summary: NoiseSummary, *, with_batch_size: bool = False) -> str:
    """``<task>_step<step>``, or ``<task>_b<B>_step<step>`` where a task is probed at several batch sizes."""
    size = f"_b{summary.batch_size}" if with_batch_size else ""
    return f"{summary.task or 'noise'}{size}_step{summary.step if summary.step is not None else 'na'}"


def save_plots(summary: NoiseSummary, out_dir: str | Path, *, with_batch_size: bool = False) -> dict[str, Path]:
    """Write ``<stem>_hist.png`` and ``<stem>_qq.png`` into ``out_dir`` (:func:`plot_stem`).

    Args:
        summary: the probe.
        out_dir: the folder (created).
        with_batch_size: put the batch size into the names (a task probed at several).

    Returns:
        ``{"hist": path, "qq": path}``.
    """
    stem = plot_stem(summary, with_batch_size=with_batch_size)
    out = Path(out_dir)
    return {
        "hist": plot_norm_histogram(summary, out / f"{stem}_hist.png"),
        "qq": plot_qq(summary, out / f"{stem}_qq.png"),
    }


def _fmt(v: float | None, spec: str = ".2f") -> str:
    if v is None or math.isnan(v):
        return "–"
    if math.isinf(v):
        return "∞"
    return format(v, spec)


def markdown_table(summaries: Sequence[NoiseSummary]) -> str:
    """One row per probe: α with its interval, batch size, Hill, kurtosis, max/median, verdict.

    Columns in parentheses are the values under the Gaussian reference (same K, same tr Σ
    and tr Σ²); for max/median it is the median and, after the slash, the 95th percentile
    that the heavy-tail rule uses. ``batch size`` is the noise mini-batch size b (the
    tails depend on it); ``α blocks`` the full-dimensional cross-check. Rows keep the
    order given (the command sorts them by task, batch size, step).

    Returns:
        A GitHub-flavoured markdown table (with a trailing newline).
    """
    head = (
        "| task | step | K | α [95% CI] | batch size | Hill (Gauss) | kurtosis (Gauss) "
        "| max/median (Gauss med / q95) | heavy-tailed | α blocks | time (s) |\n"
        "|---|---:|---:|---|---:|---|---|---|---|---:|---:|\n"
    )
    rows = []
    for s in summaries:
        a = s.alpha
        conf = f"{a.confidence:.0%}" if a else ""
        alpha = f"{a.alpha:.2f} [{a.low:.2f}, {a.high:.2f}]" if a else "–"
        if a and conf != "95%":
            alpha += f" ({conf})"
        g = s.gaussian_stats
        rows.append(
            f"| {s.task or '–'} | {'–' if s.step is None else s.step} | {s.num_batches} | {alpha} "
            f"| {s.batch_size} | {_fmt(s.hill, '.3g')} ({_fmt(g.hill, '.3g')}) "
            f"| {_fmt(s.kurtosis)} ({_fmt(g.kurtosis)}) "
            f"| {_fmt(s.max_median)} ({_fmt(g.max_median)} / {_fmt(g.max_median_q95)}) "
            f"| {'yes' if s.heavy_tailed else 'no'} | {_fmt(s.alpha_blocks)} | {s.time_s:.1f} |"
        )
    return head + "\n".join(rows) + ("\n" if rows else "")


def write_table(summaries: Sequence[NoiseSummary], path: str | Path) -> Path:
    """Write :func:`markdown_table` followed by the rule, to ``path`` (a .md file).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rule = (
        f"\nheavy-tailed = upper end of the α interval < {ALPHA_THRESHOLD} and max/median above "
        "the 95th percentile of the Gaussian reference.\n"
    )
    path.write_text(markdown_table(summaries) + rule, encoding="utf-8")
    return path
