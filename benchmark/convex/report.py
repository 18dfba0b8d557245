"""Tables (markdown), slopes against the theory, results.json and the plots of a suite run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .methods import METHODS
from .suite import ExperimentResult

__all__ = ["ConvexReport", "fit_slope"]


def fit_slope(checkpoints: list[int], values: np.ndarray, *, decades: float = 2.0) -> tuple[float, int, int]:
    """Least-squares slope of log f vs log N over the last ``decades`` decades of N.

    Returns:
        ``(slope, first N, last N)``; the slope is NaN when a value in the range is not
        positive and finite (a run that diverged or hit f* exactly).
    """
    last = checkpoints[-1]
    first = max(1, last / 10**decades)
    if last / first < 10:  # short horizons: the last decade, or what there is
        first = max(1, last / 10)
    idx = [i for i, n in enumerate(checkpoints) if n >= first]
    n = np.array([checkpoints[i] for i in idx], dtype=float)
    v = np.asarray(values, dtype=float)[idx]
    lo, hi = int(n[0]), int(n[-1])
    if len(idx) < 2 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        return math.nan, lo, hi
    return float(np.polyfit(np.log(n), np.log(v), 1)[0]), lo, hi


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


class ConvexReport:
    """The report of a suite run: ``summary.md``, ``results.json`` and PNG plots.

    Args:
        results: one :class:`~benchmark.convex.suite.ExperimentResult` per experiment.
        meta: run metadata for the header (command, machine, seconds, settings).
    """

    def __init__(self, results: list[ExperimentResult], meta: dict[str, Any]) -> None:
        self.results = results
        self.meta = meta

    # -- analysis ----------------------------------------------------------------------

    @staticmethod
    def display_points(checkpoints: list[int]) -> list[int]:
        """The N shown in the quantile tables: powers of 10 from 100, and the final N."""
        last = checkpoints[-1]
        points = [n for n in checkpoints if n >= 100 and math.log10(n).is_integer()]
        return sorted(set(points + [last]))

    def slopes(self, result: ExperimentResult) -> list[dict[str, Any]]:
        """Log-log slopes of the median and q99 of every trajectory, with the theory's."""
        rows = []
        for t in result.trajectories:
            median, lo, hi = fit_slope(t.checkpoints, t.output[:, t.probs.index(0.5)])
            q99, _, _ = fit_slope(t.checkpoints, t.output[:, t.probs.index(0.99)])
            rows.append(
                {
                    "method": t.method,
                    "source": t.source,
                    "slope_median": median,
                    "slope_q99": q99,
                    "theory": METHODS[t.method].theory_slope,
                    "fit_range": [lo, hi],
                }
            )
        return rows

    def comparisons(self, result: ExperimentResult) -> list[dict[str, Any]]:
        """Clipped vs unclipped counterpart, same source, at the final N."""
        rows = []
        for t in result.trajectories:
            counterpart = METHODS[t.method].counterpart
            base = result.trajectory(counterpart, t.source) if counterpart else None
            if base is None:
                continue
            rows.append(
                {
                    "clipped": t.method,
                    "unclipped": counterpart,
                    "source": t.source,
                    "q99_unclipped_over_clipped": _ratio(base.final(0.99), t.final(0.99)),
                    "median_clipped_over_unclipped": _ratio(t.final(0.5), base.final(0.5)),
                    "max_unclipped_over_clipped": _ratio(base.final(1.0), t.final(1.0)),
                    "clipped_fraction": t.clipped_fraction,
                }
            )
        return rows

    # -- markdown ----------------------------------------------------------------------

    def markdown(self) -> str:
        """The whole summary.md: header, formulas, overview, one section per experiment."""
        m = self.meta
        lines = [
            "# Convex theory suite: high-probability behaviour of clipped-SGD and clipped-SSTM",
            "",
            f"Command: `{m.get('command', '')}`  ",
            f"Machine: {m.get('machine', '')}; torch {m.get('torch', '')}; {m.get('jobs', 1)} worker process(es)  ",
            f"Runs per setting: {m.get('runs')} (sweep: {m.get('tune_runs')} per grid point, other seeds); "
            f"seed {m.get('seed')}; total wall time {m.get('seconds', 0):.0f} s",
            "",
            "f(output) − f* across independent runs; output = the theory's point (x̄ᴺ for SGD-type, "
            "yᴺ for SSTM-type, xᴺ for Adam). Quantiles are empirical (inverted CDF); `inf` = diverged runs.",
            "",
            "Two regimes. *Theorem's mini-batches*: every hyperparameter and every batch size m_k from the "
            "theorems' formulas; this is where the rates O(1/N²) (SSTM-type) and O(ln N/N) (SGD-type) are "
            "claimed, so the slopes are compared there. *Fixed mini-batch*: every method gets the same N "
            "oracle calls (equal budgets) and its own tuned hyperparameters; the theorems' formulas, made for "
            "their batch sizes, do not apply, and the error has a noise floor, so slopes there are not "
            "comparable to −2/−1. Clipped and unclipped runs of one experiment see the same random draws.",
            "",
            "Theory formulas (constants stated):",
            "",
        ]
        lines += [f"- {f}" for f in m.get("formulas", [])]
        lines += ["", "## Overview at the final N: median / q99 of f(output) − f*", ""]
        lines += self.overview()
        for result in self.results:
            lines += [""] + self.experiment_markdown(result)
        return "\n".join(lines) + "\n"

    def overview(self) -> list[str]:
        """One row per experiment and source, one column per method: median / q99 at N."""
        methods = [m for m in METHODS if any(r.trajectory(m, s) for r in self.results for s in ("theory", "tuned"))]
        rows = []
        for result in self.results:
            for source in ("theory", "tuned"):
                cells = [result.trajectory(m, source) for m in methods]
                if not any(cells):
                    continue
                row = [result.experiment.title.rsplit(", N =", 1)[0], source]
                row += [f"{_fmt(t.final(0.5))} / {_fmt(t.final(0.99))}" if t else "–" for t in cells]
                rows.append(row)
        return _table(["experiment", "hparams"] + [METHODS[m].label for m in methods], rows)

    def experiment_markdown(self, result: ExperimentResult) -> list[str]:
        """One experiment's section: constants, hyperparameters, quantiles, slopes, comparisons."""
        e, p = result.experiment, result.problem
        lines = [f"## {e.title}", ""]
        lines.append(
            f"L = {_fmt(p['L'])}, R₀ = {_fmt(p['R0'])}, σ² = {_fmt(p['sigma2'])} (per oracle call), "
            f"f* = {_fmt(p['f_star'], 12)}, f(x⁰) − f* = {_fmt(p['f0_minus_f_star'])}, d = {p['dim']}."
        )
        for key in ("noise_law", "data", "spectrum", "oracle"):
            if key in p:
                lines.append(f"{key.replace('_', ' ').capitalize()}: {p[key]}.")
        if "excess_kurtosis_features" in p:
            lines.append(
                f"Fat tails of the data: excess kurtosis of the features {p['excess_kurtosis_features']}; "
                f"per-sample gradient norms at x*: max/median = {p['grad_norm_at_x_star_max_over_median']:.1f}."
            )
        lines += ["", "### Hyperparameters", ""]
        criterion = next(iter(result.sweep.values())).criterion if result.sweep else None
        rows = []
        for name in result.theory:
            method = METHODS[name]
            sweep = result.sweep.get(name)
            tuned = method.describe_hparams(sweep.best) if sweep else "not tuned"
            if sweep and sweep.at_edge:
                tuned += f" (grid edge: {', '.join(sweep.at_edge)})"
            b = result.batches.get(name, {})
            batch = f"{b.get('min')}" if b.get("min") == b.get("max") else f"{b.get('min')}–{b.get('max')}"
            run = result.trajectory(name, "theory") or result.trajectory(name, "tuned")
            if run is not None and run.capped_steps:
                batch += f" (capped at {p.get('max_batch')} on {run.capped_steps} steps: outside the theorem)"
            theory = method.describe_hparams(result.theory[name])
            rows.append([method.label, theory, tuned, batch, f"{b.get('total', 0):.3g}"])
        tuned_header = f"tuned (min {criterion} at N, sweep seeds)" if criterion else "tuned"
        lines += _table(["method", "theory", tuned_header, "mini-batch m", "oracle calls per run"], rows)
        lines += ["", "### Quantiles of f(output) − f*", ""]
        rows = []
        for t in result.trajectories:
            for n in self.display_points(t.checkpoints):
                rows.append(
                    [METHODS[t.method].label, t.source, str(n)]
                    + [_fmt(t.at(n, q)) for q in (0.5, 0.9, 0.99, 1.0)]
                )
        lines += _table(["method", "hparams", "N", "median", "q90", "q99", "max"], rows)
        lines += ["", "### Log-log slopes vs N (theory: smooth convex regime, with the theorem's mini-batches)", ""]
        rows = [
            [
                METHODS[s["method"]].label,
                s["source"],
                _fmt(s["slope_median"], 3),
                _fmt(s["slope_q99"], 3),
                "n/a" if s["theory"] is None else f"{s['theory']:g}",
                f"{s['fit_range'][0]}–{s['fit_range'][1]}",
            ]
            for s in self.slopes(result)
        ]
        lines += _table(["method", "hparams", "slope median", "slope q99", "theory", "fit over N"], rows)
        comparisons = self.comparisons(result)
        if comparisons:
            lines += ["", f"### Clipping vs none at N = {e.iters}", ""]
            rows = [
                [
                    f"{METHODS[c['clipped']].label} vs {METHODS[c['unclipped']].label}",
                    c["source"],
                    _fmt(c["q99_unclipped_over_clipped"]),
                    _fmt(c["max_unclipped_over_clipped"]),
                    _fmt(c["median_clipped_over_unclipped"]),
                    f"{100 * c['clipped_fraction']:.1f}%",
                ]
                for c in comparisons
            ]
            header = ["pair", "hparams", "q99 unclipped / clipped", "max unclipped / clipped"]
            lines += _table(header + ["median clipped / unclipped", "steps clipped"], rows)
        lines += ["", f"### Last iterate xᴺ at N = {e.iters} (where it differs from the output)", ""]
        rows = [
            [METHODS[t.method].label, t.source]
            + [_fmt(t.final(q, where="last")) for q in (0.5, 0.99)]
            + [_fmt(t.final(q)) for q in (0.5, 0.99)]
            for t in result.trajectories
            if METHODS[t.method].family != "adam"
        ]
        lines += _table(["method", "hparams", "last median", "last q99", "output median", "output q99"], rows)
        lines += ["", "### Speed", ""]
        rows = [
            [METHODS[t.method].label, t.source, str(t.runs), f"{t.seconds:.1f}"]
            for t in result.trajectories
        ]
        lines += _table(["method", "hparams", "runs", f"seconds for {e.iters} steps"], rows)
        return lines

    # -- files -------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        """results.json: metadata, and per experiment every input and measured number."""
        out = {"meta": self.meta, "experiments": []}
        for result in self.results:
            out["experiments"].append(
                {
                    "experiment": result.experiment.as_dict(),
                    "name": result.experiment.name,
                    "problem": result.problem,
                    "theory_hparams": result.theory,
                    "sweep": {k: v.as_dict() for k, v in result.sweep.items()},
                    "batches": result.batches,
                    "trajectories": [t.as_dict() for t in result.trajectories],
                    "slopes": self.slopes(result),
                    "comparisons": self.comparisons(result),
                }
            )
        return _jsonable(out)

    def write(self, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
        """Write summary.md, results.json and (optionally) the plots; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "summary.md", out / "results.json"]
        paths[0].write_text(self.markdown())
        paths[1].write_text(json.dumps(self.as_dict(), indent=1))
        if plots:
            from .plots import plot_experiment

            for result in self.results:
                paths += plot_experiment(result, out)
        return paths


def _ratio(a: float, b: float) -> float:
    if b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    if math.isinf(a) and math.isinf(b):
        return math.nan
    return a / b


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.integer):
        return int(value)
    return value
