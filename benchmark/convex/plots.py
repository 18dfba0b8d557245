"""PNG plots: f(output) − f* vs N on log-log axes, median line and quantile bands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .methods import METHODS
from .suite import ExperimentResult

__all__ = ["plot_experiment"]

_COLORS = {
    "sgd": "tab:blue",
    "clipped_sgd": "tab:cyan",
    "sstm": "tab:red",
    "clipped_sstm": "tab:orange",
    "adam": "tab:green",
}


def _log_log_axes(ax: Any, ylim: tuple[float, float] | None) -> None:
    """The quantile panels' common axes: log-log, shared y-limits, N on x, a light grid."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_xlabel("N (iterations)")
    ax.grid(True, which="major", alpha=0.3)


def _column(t, prob: float) -> np.ndarray:
    values = t.output[:, t.probs.index(prob)].astype(float)
    # Log axes: hide non-positive values; +inf (diverged runs) is left to clip at the top.
    return np.where(values > 0, values, np.nan)


def _limits(trajectories) -> tuple[float, float] | None:
    """y-limits spanning every band and worst run (finite, positive values only)."""
    values = [
        v
        for t in trajectories
        for v in t.output[:, [t.probs.index(0.005), t.probs.index(1.0)]].ravel()
        if 0 < v < math.inf
    ]
    return (min(values) / 2, max(values) * 2) if values else None


def plot_experiment(result: ExperimentResult, out_dir: Path) -> list[Path]:
    """One figure per hyperparameter source (a panel per method) and one overlay figure.

    Bands: the central 90% (5%–95%) and 99% (0.5%–99.5%) of runs, the median as a line,
    the worst run dotted. The overlay shows every method's median (solid) and 99%
    quantile (dashed) on one axis, and with the theorem's mini-batches the theory's
    rates N⁻¹ and N⁻² as gray dotted guides through the final medians.

    Returns:
        The written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    e = result.experiment
    sources = sorted({t.source for t in result.trajectories}, key=["theory", "tuned"].index)
    for source in sources:
        runs = [t for t in result.trajectories if t.source == source]
        ylim = _limits(runs)
        fig, axes = plt.subplots(1, len(runs), figsize=(3.2 * len(runs), 3.4), sharey=True, squeeze=False)
        for ax, t in zip(axes[0], runs):
            n = np.array(t.checkpoints, dtype=float)
            color = _COLORS.get(t.method, "black")
            for lo, hi, alpha, label in ((0.005, 0.995, 0.18, "99% of runs"), (0.05, 0.95, 0.35, "90% of runs")):
                ax.fill_between(n, _column(t, lo), _column(t, hi), color=color, alpha=alpha, lw=0, label=label)
            ax.plot(n, _column(t, 0.5), color=color, lw=1.8, label="median")
            ax.plot(n, _column(t, 1.0), color=color, lw=0.8, ls=":", label="worst run")
            _log_log_axes(ax, ylim)
            ax.set_title(f"{METHODS[t.method].label}\n{METHODS[t.method].describe_hparams(t.hparams)}", fontsize=8)
        axes[0][0].set_ylabel("f(output) − f*")
        axes[0][0].legend(fontsize=7, loc="lower left")
        fig.suptitle(f"{e.title} — {source} hyperparameters, {runs[0].runs} runs", fontsize=9)
        # Fixed margins: tight_layout costs more than the rest of the figure.
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.78, wspace=0.08)
        path = out_dir / f"{e.name}_{source}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    ylim = _limits(result.trajectories)
    fig, axes = plt.subplots(1, len(sources), figsize=(5.2 * len(sources), 4), sharey=True, squeeze=False)
    for ax, source in zip(axes[0], sources):
        guides = set()
        for t in (t for t in result.trajectories if t.source == source):
            n = np.array(t.checkpoints, dtype=float)
            color = _COLORS.get(t.method, "black")
            ax.plot(n, _column(t, 0.5), color=color, lw=1.8, label=f"{METHODS[t.method].label} median")
            ax.plot(n, _column(t, 0.99), color=color, lw=1.2, ls="--", label=f"{METHODS[t.method].label} q99")
            slope = METHODS[t.method].theory_slope
            end = _column(t, 0.5)[-1]
            if e.batch == "theorem" and slope is not None and slope not in guides and np.isfinite(end):
                # The theory's rate through the final median, over the last two decades.
                guides.add(slope)
                span = np.array([n[-1] / 100, n[-1]])
                ax.plot(span, end * (span / n[-1]) ** slope, color="gray", lw=0.8, ls=":")
                ax.annotate(f"∝ N^{slope:g}", (n[-1] / 3, end * 3 ** (-slope)), fontsize=7, color="gray", ha="right")
        _log_log_axes(ax, ylim)
        ax.set_title(f"{source} hyperparameters", fontsize=9)
    axes[0][0].set_ylabel("f(output) − f*")
    axes[0][-1].legend(fontsize=6, loc="lower left", ncol=2)
    fig.suptitle(e.title, fontsize=9)
    fig.subplots_adjust(left=0.15 if len(sources) == 1 else 0.08, right=0.98, bottom=0.12, top=0.88, wspace=0.08)
    path = out_dir / f"{e.name}_overlay.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return paths + [path]
