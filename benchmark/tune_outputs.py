"""What ``python -m benchmark tune`` writes: config fragments, the trials table, sensitivity plots."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["best_fragment", "fragment_name", "plot_sensitivity", "trial_rows", "write_trials_csv"]


def fragment_name(optimizer: str, preset: str) -> str:
    """The config file the bench reads for tuned settings (:func:`benchmark.grid.config_stack`)."""
    return f"embedded_{optimizer}.yaml" if preset == "bench" else f"tuned_{optimizer}.yaml"


def _round(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def best_fragment(study, base: Mapping[str, Any], command: str, n_trials: int) -> str | None:
    """A config fragment with the best complete trial's settings over ``base``, or None.

    The fragment restates the whole ``optimizer_args`` dict: a later config's dict replaces
    an earlier one (jsonargparse does not merge them).
    """
    complete = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("outcome") == "complete"]
    if not complete:
        return None
    best = study.best_trial
    args = {**base, **{k: _round(v) for k, v in best.params.items()}}
    metric = study.user_attrs.get("metric", "the primary metric")
    header = (
        f"# Tuned: {command}\n"
        f"# Study {study.study_name}: best of {len(complete)} complete trial(s) (budget {n_trials}), trial {best.number}, "
        f"{metric} = {best.value:.4g} on the held-out tuning split (not the reported validation split).\n"
        "# The whole dict: a later config's optimizer_args replaces an earlier one, it does not merge.\n"
    )
    body = yaml.safe_dump({"model": {"init_args": {"optimizer_args": args}}}, default_flow_style=None, sort_keys=False)
    return header + body


def trial_rows(studies: Mapping[tuple[str, str], Any]) -> list[dict[str, Any]]:
    """One row per trial of every study: dataset, optimizer, number, state, outcome, value, params."""
    rows = []
    for (dataset, optimizer), study in studies.items():
        for t in study.get_trials(deepcopy=False):
            seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
            rows.append({
                "dataset": dataset, "optimizer": optimizer, "study": study.study_name, "trial": t.number,
                "state": t.state.name, "outcome": t.user_attrs.get("outcome", ""), "value": t.value,
                "seconds": round(seconds, 1) if seconds is not None else None,
                **{f"param_{k}": v for k, v in t.params.items()}, "run_dir": t.user_attrs.get("run_dir", ""),
            })  # fmt: skip
    return rows


def write_trials_csv(studies: Mapping[tuple[str, str], Any], path: Path) -> Path:
    """``trials.csv``: :func:`trial_rows`, the parameter columns the union over studies."""
    rows = trial_rows(studies)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or ["dataset"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_sensitivity(studies: Mapping[tuple[str, str], Any], out_dir: Path) -> list[Path]:
    """Per dataset ``<dataset>_sensitivity.png``: the held-out metric vs the learning rate
    of each complete trial, one line per optimizer (other hyperparameters vary too: the
    line is the sensitivity along lr of the quasi-random sample, not a slice)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset in sorted({d for d, _ in studies}):
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for (d, optimizer), study in studies.items():
            points = sorted(
                (t.params["lr"], t.value) for t in study.get_trials(deepcopy=False)
                if d == dataset and t.user_attrs.get("outcome") == "complete" and "lr" in t.params
            )  # fmt: skip
            if points:
                ax.plot(*zip(*points), marker="o", label=optimizer)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        metric = next(s.user_attrs.get("metric", "metric") for (d, _), s in studies.items() if d == dataset)
        ax.set(xscale="log", xlabel="learning rate", ylabel=f"{metric} (held-out split)", title=f"{dataset}: sensitivity to the learning rate")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{dataset}_sensitivity.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
