"""Time-to-target and performance profiles (AlgoPerf style) from the runs' validation histories.

**Target.** Per task, the baseline's final validation metric: the mean over the
baseline's seeds of its primary metric at the end of training (SGD by default).

**Time to target** of a run: the global step and the wall-clock seconds since the fit
began at the first validation whose primary metric reaches the target (``>=`` when higher
is better, ``<=`` otherwise), or *never*. Read from ``final.json``'s ``val_history``
(written by :class:`benchmark.callbacks.RunSummaryCallback`), or from the logged
validation curve (steps only) for runs that lack it. Validation happens only at the
logged points, so a time is an upper bound at that resolution.

**Performance profile.** Per (task, optimizer) the time is the median over seeds (a
seed that never reaches the target counts as infinite). With ``t_{p,o}`` that time on
task ``p`` and ``r_{p,o} = t_{p,o} / min_o' t_{p,o'}``, the profile of optimizer ``o`` is
``rho_o(tau) = |{p : r_{p,o} <= tau}| / |tasks|``: the fraction of tasks it solves within
``tau`` times the fastest optimizer's time.

References:
    E. D. Dolan, J. J. Moré (2002), "Benchmarking optimization software with performance
    profiles", Mathematical Programming 91.
    G. E. Dahl et al. (2023), "Benchmarking Neural Network Training Algorithms"
    (AlgoPerf), arXiv:2306.07179, section 4.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .report_stats import higher_is_better

if TYPE_CHECKING:  # pragma: no cover
    from .report import RunRecord

__all__ = [
    "Reached",
    "history_of",
    "performance_profile",
    "plot_profiles",
    "profile_section",
    "targets",
    "time_to_target",
    "times_per_task",
]

MEASURES = ("steps", "seconds")


@dataclass(frozen=True)
class Reached:
    """Where a run first reached the target (``seconds`` is None without wall times)."""

    step: int
    seconds: float | None


def history_of(record: RunRecord) -> list[tuple[int, float | None, float]]:
    """``(step, seconds, value)`` per validation of a run, in order."""
    logged = record.info.get("val_history") or []
    if logged:
        return [(int(h["step"]), h.get("seconds"), float(h["value"])) for h in logged if h.get("value") is not None]
    return [(int(step), None, float(value)) for step, value in record.val_curve]


def time_to_target(
    history: Iterable[tuple[int, float | None, float]], target: float, *, higher_is_better: bool
) -> Reached | None:
    """The first validation of ``history`` that reaches ``target``, or None (never).

    Raises:
        ValueError: ``target`` is not finite.
    """
    if not math.isfinite(target):
        raise ValueError(f"Invalid target: {target!r} (must be a finite metric value)")
    for step, seconds, value in history:
        if (value >= target) if higher_is_better else (value <= target):
            return Reached(step, seconds)
    return None


def targets(records: Sequence[RunRecord], baseline: str) -> dict[str, float]:
    """dataset -> the baseline's final primary metric, averaged over its seeds."""
    out: dict[str, list[float]] = {}
    for r in records:
        value = r.metrics.get(r.primary_metric)
        if r.optimizer == baseline and value is not None and math.isfinite(value):
            out.setdefault(r.dataset, []).append(float(value))
    return {d: statistics.fmean(v) for d, v in out.items()}


def _time(reached: Reached | None, measure: str) -> float:
    if reached is None:
        return math.inf
    value = reached.step if measure == "steps" else reached.seconds
    return math.nan if value is None else float(value)


def times_per_task(
    records: Sequence[RunRecord], baseline: str, measure: str = "steps"
) -> dict[str, dict[str, list[float]]]:
    """dataset -> optimizer -> time to target per seed (``inf``: never; ``nan``: unknown,
    a run without wall times measured in seconds).

    Raises:
        ValueError: unknown ``measure``.
    """
    if measure not in MEASURES:
        raise ValueError(f"Invalid measure: {measure!r} (must be one of {', '.join(MEASURES)})")
    goal = targets(records, baseline)
    out: dict[str, dict[str, list[float]]] = {}
    for r in sorted(records, key=lambda r: (r.dataset, r.optimizer, r.seed if r.seed is not None else -1)):
        if r.dataset not in goal:
            continue
        reached = time_to_target(history_of(r), goal[r.dataset], higher_is_better=higher_is_better(r.primary_metric))
        out.setdefault(r.dataset, {}).setdefault(r.optimizer, []).append(_time(reached, measure))
    return out


def _median(times: Sequence[float]) -> float:
    return math.nan if any(math.isnan(t) for t in times) else float(np.median(times))


def performance_profile(
    times: Mapping[str, Mapping[str, float]], taus: Sequence[float]
) -> dict[str, list[float]]:
    """``rho_o(tau)`` per optimizer: the fraction of tasks solved within ``tau``× the fastest.

    Args:
        times: task -> optimizer -> time to target (``inf``: never). An optimizer missing
            on a task counts as never reaching it there.
        taus: the ratios at which the profile is evaluated (>= 1).

    Returns:
        optimizer -> one fraction per ``tau``.

    Raises:
        ValueError: no task, a ``tau`` below 1, or a negative or NaN time.
    """
    if not times:
        raise ValueError("Invalid times: no task (the profile needs at least one task)")
    if any(t < 1 for t in taus):
        raise ValueError(f"Invalid taus: {list(taus)} (ratios to the fastest time must be >= 1)")
    optimizers = sorted({o for per in times.values() for o in per})
    ratios = {o: [] for o in optimizers}
    for task, per in times.items():
        values = [per.get(o, math.inf) for o in optimizers]
        if any(math.isnan(v) or v < 0 for v in values):
            raise ValueError(f"Invalid times for task {task!r}: {dict(per)} (must be >= 0 or inf, not NaN)")
        fastest = min(values)
        for o, t in zip(optimizers, values):
            if math.isinf(t):
                ratios[o].append(math.inf)
            elif fastest == 0:
                ratios[o].append(1.0 if t == 0 else math.inf)
            else:
                ratios[o].append(t / fastest)
    n = len(times)
    return {o: [sum(r <= tau for r in ratios[o]) / n for tau in taus] for o in optimizers}


def _median_times(per_seed: Mapping[str, Mapping[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {task: {o: _median(v) for o, v in per.items()} for task, per in per_seed.items()}


def plot_profiles(
    records: Sequence[RunRecord], out_dir: Path, baseline: str, labels: Mapping[str, str], tau_max: float = 10.0
) -> Path | None:
    """``performance_profile.png``: rho(tau) in steps, and in seconds when every run has
    wall times; None when no task has a target (no baseline runs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    taus = list(np.geomspace(1.0, tau_max, 200))
    panels = []
    for measure in MEASURES:
        medians = _median_times(times_per_task(records, baseline, measure))
        if medians and not any(math.isnan(t) for per in medians.values() for t in per.values()):
            panels.append((measure, performance_profile(medians, taus), len(medians)))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for ax, (measure, profile, n_tasks) in zip(axes[0], panels):
        for o, rho in profile.items():
            ax.step(taus, rho, where="post", label=labels.get(o, o))
        ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel=f"τ (× the fastest, in {measure})", ylabel="fraction of tasks")
        ax.set_title(f"Performance profile ({measure}; {n_tasks} task(s), target: {labels.get(baseline, baseline)}'s final)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out_dir / "performance_profile.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _format(t: float, unit: str) -> str:
    if math.isinf(t):
        return "never"
    if math.isnan(t):
        return "—"
    return f"{t:.0f}" if unit == "steps" else f"{t:.1f} s"


def profile_section(records: Sequence[RunRecord], baseline: str, labels: Mapping[str, str]) -> str:
    """The report's time-to-target table: per task and optimizer, how many seeds reached
    the target and the median steps and seconds they took."""
    goal = targets(records, baseline)
    if not goal:
        return f"(no runs of the baseline {baseline}: no target)"
    steps = times_per_task(records, baseline, "steps")
    seconds = times_per_task(records, baseline, "seconds")
    lines = [
        (
            f"Target per task: {labels.get(baseline, baseline)}'s final validation metric (mean over its seeds). "
            "Median over seeds of the first validation that reaches it; *never* when the median seed does not.\n"
        ),
        "| dataset | target | optimizer | reached | steps | wall clock |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, per in steps.items():
        for optimizer, times in per.items():
            reached = sum(math.isfinite(t) for t in times)
            lines.append(
                f"| {dataset} | {goal[dataset]:.4g} | {labels.get(optimizer, optimizer)} | {reached}/{len(times)} | "
                f"{_format(_median(times), 'steps')} | {_format(_median(seconds[dataset][optimizer]), 'seconds')} |"
            )
    return "\n".join(lines)
