"""The statistics part of the report: cells with intervals, paired verdicts, bold.

Reads the runs' primary metrics per (dataset, optimizer, seed) and formats what
:mod:`benchmark.stats` computes: per cell the mean over seeds ± the half-width of its 95%
Student-t interval (bold only when significantly best), and per optimizer the paired
difference to the baseline with its interval and verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from .stats import METHOD, TOO_FEW, mean_ci, paired_difference, significantly_best

if TYPE_CHECKING:  # pragma: no cover
    from .report import RunRecord

__all__ = ["METHOD", "higher_is_better", "paired_table", "per_seed", "seed_cells", "statistics_note"]

# Metric names (the part after "val/" or "test/") where lower is better.
_LOWER_IS_BETTER = ("loss", "bpc", "bpb", "ppl", "perplexity", "error", "nll")


def higher_is_better(metric: str) -> bool:
    """The direction of a metric: the task table's for a primary metric, else by its name: losses, bits per character, perplexities
    and errors are lower-is-better, the rest (accuracy, mIoU, PSNR, SSIM) higher."""
    from .tasks import TASKS  # the task table decides for its primary metrics

    for task in TASKS:
        if task.primary_metric == metric:
            return task.higher_is_better
    name = metric.rsplit("/", 1)[-1].lower()
    return not any(name == word or name.startswith(word + "_") or name.endswith("_" + word) for word in _LOWER_IS_BETTER)


def per_seed(records: Iterable[RunRecord], dataset: str, metric: str) -> dict[str, dict[int, float]]:
    """optimizer -> (seed -> value of ``metric``) for the runs of ``dataset`` that have it.

    Runs without a seed count as seeds 0, 1, ... in the order given (they cannot pair).
    """
    out: dict[str, dict[int, float]] = {}
    unseeded = 0
    for r in records:
        if r.dataset != dataset or metric not in r.metrics or not math.isfinite(r.metrics[metric]):
            continue
        seed = r.seed
        if seed is None:
            seed, unseeded = -1 - unseeded, unseeded + 1
        out.setdefault(r.optimizer, {})[int(seed)] = float(r.metrics[metric])
    return out


def _number(x: float, factor: float, digits: int) -> str:
    return f"{x * factor:.{digits}f}"


def seed_cells(
    records: Sequence[RunRecord], dataset: str, metric: str, optimizers: Sequence[str], factor: float, digits: int
) -> list[str]:
    """One cell per optimizer: ``mean ± CI half-width`` (``mean`` with one seed), bold when
    significantly best in the row, ``—`` without runs."""
    values = per_seed(records, dataset, metric)
    best = significantly_best(values, higher_is_better=higher_is_better(metric)) if values else None
    cells = []
    for o in optimizers:
        if o not in values:
            cells.append("—")
            continue
        ci = mean_ci(list(values[o].values()))
        text = _number(ci.mean, factor, digits)
        if ci.n > 1:
            text += f" ± {ci.half_width * factor:.{digits}f}"
        cells.append(f"**{text}**" if o == best else text)
    return cells


def paired_table(
    records: Sequence[RunRecord],
    rows: Iterable[tuple[str, str, str, float, int]],
    optimizers: Sequence[str],
    baseline: str,
    labels: dict[str, str],
) -> str:
    """Per task, per optimizer: paired difference to ``baseline``, its 95% CI and verdict.

    Args:
        rows: ``(dataset, task label, primary metric, factor, digits)`` per table row.
        optimizers: the columns (the baseline is left out).
        baseline: the registry name the others are compared with.
        labels: registry name -> display name.

    Returns:
        A Markdown table; a cell reads ``+1.20 [0.35, 2.05] better`` in the table's unit.
    """
    others = [o for o in optimizers if o != baseline]
    header = ["Task", "Metric", *(f"{labels.get(o, o)} − {labels.get(baseline, baseline)}" for o in others)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, task, metric, factor, digits in rows:
        values = per_seed(records, dataset, metric)
        cells = []
        for o in others:
            if o not in values or baseline not in values or not set(values[o]) & set(values[baseline]):
                cells.append("—")
                continue
            pair = paired_difference(values[o], values[baseline], higher_is_better=higher_is_better(metric))
            text = f"{pair.diff.mean * factor:+.{digits}f}"
            if pair.verdict != TOO_FEW:
                text += f" [{_number(pair.diff.low, factor, digits)}, {_number(pair.diff.high, factor, digits)}]"
            cells.append(f"{text} {pair.verdict} (n={len(pair.seeds)})")
        lines.append("| " + " | ".join([task, metric, *cells]) + " |")
    return "\n".join(lines)


def statistics_note(seeds: Sequence[int], baseline: str) -> str:
    """The paragraph that states the method under the table."""
    text = f"Seeds {list(seeds)}; baseline of the paired differences: {baseline}. {METHOD}"
    if len(seeds) < 2:
        text += " With one seed there is no interval and no verdict: run several (`--seeds 0 1 2`)."
    return text
