"""The benchmark report: the thesis's table, per-task plots and every figure as JSON.

``python -m benchmark report RUN [RUN ...] --out DIR`` reads finished runs, each a run
directory written by ``python -m benchmark fit`` (``final.json`` + ``csv/*/metrics.csv``), a
directory holding such runs at any depth, or an offline W&B run (``offline-run-*``), and
writes ``summary.md``, ``results.json`` and ``<dataset>_curves.png`` into DIR.

The statistics live in :mod:`benchmark.stats` / :mod:`benchmark.report_stats`, time to
target in :mod:`benchmark.profiles`; this module reads runs and lays out the report.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from .tasks import TASKS, dataset_names, get_task
from .profiles import plot_profiles, profile_section
from .report_stats import paired_table, seed_cells, statistics_note
from .tracking import read_metrics_csv, read_offline_run

__all__ = ["RunRecord", "TASK_ROWS", "build_report", "load_runs", "main"]

# dataset -> (task label, model label, metric label, factor to the table's unit), from the task table
TASK_ROWS: dict[str, tuple[str, str, str, float]] = {t.name: (*t.row_labels, t.factor) for t in TASKS}
PRIMARY = {t.kind: t.primary_metric for t in TASKS}
TASK_DATASET = {t.kind: t.name for t in TASKS}


class _RegistryLabels(Mapping):
    """The registry's display names (``OptimizerSpec.display_name``), in its table order;
    read on first use, so that importing this module does not import torch."""

    def _labels(self) -> dict[str, str]:
        from optim.factory import display_names

        return display_names()

    def __getitem__(self, name: str) -> str:
        return self._labels()[name]

    def __iter__(self):
        return iter(self._labels())

    def __len__(self) -> int:
        return len(self._labels())


OPTIMIZER_LABELS: Mapping[str, str] = _RegistryLabels()
# The thesis's table (Zholobov, MIPT), for side-by-side reading.
THESIS = {
    "imagenet": {"adam": 47.21, "clipped_sgd": 52.32, "sgd": 45.8, "clipped_sstm": 47.2},
    "voc": {"adam": 0.466, "clipped_sgd": 0.576, "sgd": 0.578, "clipped_sstm": 0.549},
    "div2k": {"adam": 18.046, "clipped_sgd": 17.855, "sgd": 17.873, "clipped_sstm": 17.869},
}


@dataclass
class RunRecord:
    """One finished run, from its files."""

    source: str
    dataset: str
    task: str
    optimizer: str
    seed: int | None
    primary_metric: str
    metrics: dict[str, float] = field(default_factory=dict)
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def _float(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _curves(rows: Iterable[dict[str, Any]], primary: str) -> tuple[list, list]:
    loss, val = [], []
    for row in rows:
        step = _float(row.get("step", row.get("trainer/global_step")))
        if step is None:
            continue
        for key, target in (("train/loss_step", loss), (primary, val)):
            value = _float(row.get(key))
            if value is not None:
                target.append((int(step), value))
    return loss, val


def _from_run_dir(path: Path) -> RunRecord:
    final = json.loads((path / "final.json").read_text())
    primary = final.get("primary_metric") or PRIMARY[final["task"]]
    record = RunRecord(
        source=str(path),
        dataset=final.get("dataset") or TASK_DATASET[final["task"]],
        task=final["task"],
        optimizer=final["optimizer"],
        seed=final.get("seed"),
        primary_metric=primary,
        metrics=final.get("metrics", {}),
        info={k: final.get(k) for k in ("train_seconds", "evaluate_at", "bn_recomputed", "optimizer_stats", "global_step", "device", "arch", "arch_args", "val_history")},
    )
    record.loss_curve, record.val_curve = _curves(read_metrics_csv(path), primary)
    return record


def _from_wandb(path: Path) -> RunRecord:
    run = read_offline_run(path)
    config = run.config
    task = config.get("task")
    if task not in PRIMARY:
        raise ValueError(f"{path}: the W&B run has no clipbench 'task' in its config")
    primary = PRIMARY[task]
    record = RunRecord(
        source=str(path),
        dataset=config.get("dataset") or TASK_DATASET[task],
        task=task,
        optimizer=config.get("optimizer", "?"),
        seed=config.get("seed"),
        primary_metric=primary,
        metrics={k: float(v) for k, v in run.summary.items() if isinstance(v, (int, float)) and "/" in k},
        info={"evaluate_at": config.get("evaluate_at")},
    )
    record.loss_curve, record.val_curve = _curves(run.history, primary)
    return record


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    """Every finished run under ``paths`` (run dirs, trees of them, offline W&B runs).

    A run directory with ``final.json`` is read from its files; an offline W&B run only
    when no such file describes the same run.

    Raises:
        FileNotFoundError: a path does not exist, or nothing under the paths is a run.
    """
    records, seen = [], set()
    for root in map(Path, paths):
        if not root.exists():
            raise FileNotFoundError(f"no such run or directory: {root}")
        for final in sorted([root / "final.json"] if (root / "final.json").exists() else root.rglob("final.json")):
            records.append(_from_run_dir(final.parent))
            seen.add(final.parent.resolve())
        offline = [root] if root.name.startswith("offline-run-") else sorted(root.rglob("offline-run-*"))
        for run_dir in offline:
            owner = run_dir.parent.parent.resolve()  # <run dir>/wandb/offline-run-*
            if owner not in seen and run_dir.is_dir():
                records.append(_from_wandb(run_dir))
    if not records:
        raise FileNotFoundError(
            f"no finished runs under {', '.join(map(str, paths))} (looked for final.json and wandb/offline-run-*)"
        )
    return records


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def aggregate(records: list[RunRecord]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """dataset -> optimizer -> metric -> {mean, std, min, max, n} across seeds."""
    out: dict = {}
    for r in records:
        for key, value in r.metrics.items():
            out.setdefault(r.dataset, {}).setdefault(r.optimizer, {}).setdefault(key, []).append(value)
    return {
        d: {o: {k: _stats(v) for k, v in metrics.items()} for o, metrics in per_opt.items()}
        for d, per_opt in out.items()
    }


def _order(optimizers: Iterable[str]) -> list[str]:
    known = list(OPTIMIZER_LABELS)
    return sorted(optimizers, key=lambda o: (known.index(o) if o in known else len(known), o))


def _rows(agg: dict, records: list[RunRecord]) -> list[tuple[str, str, float, int]]:
    """``(dataset, primary metric, factor to the table's unit, digits)`` per table row, in
    the task table's order."""
    order = dataset_names()
    known = {t.name: t for t in TASKS}
    rows = []
    for dataset in sorted(agg, key=lambda d: order.index(d) if d in order else len(order)):
        primary = next(r.primary_metric for r in records if r.dataset == dataset)
        spec = known.get(dataset)
        rows.append((dataset, primary, *((spec.factor, spec.digits) if spec else (1.0, 3))))
    return rows


def thesis_table(agg: dict, records: list[RunRecord]) -> str:
    """Rows Task / Model / Metric, one column per optimizer: mean ± 95% CI half-width over
    seeds, bold only where significantly best (:mod:`benchmark.stats`)."""
    optimizers = _order({r.optimizer for r in records})
    header = ["Task", "Model", "Metric", *(OPTIMIZER_LABELS.get(o, o) for o in optimizers)]
    known = {t.name: t for t in TASKS}
    has_sr = any(known[d].baseline for d in agg if d in known)
    if has_sr:
        header.append("bicubic")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, primary, factor, digits in _rows(agg, records):
        spec = known.get(dataset)
        task, model, label = spec.row_labels if spec else (dataset, "", primary)
        cells = seed_cells(records, dataset, primary, optimizers, factor, digits)
        if has_sr:
            baseline = [agg[dataset].get(o, {}).get(spec.baseline) for o in optimizers] if spec and spec.baseline else []
            baseline = [b for b in baseline if b]
            cells.append(f"{baseline[0]['mean'] * factor:.{digits}f}" if baseline else "—")
        lines.append("| " + " | ".join([task, model, label, *cells]) + " |")
    return "\n".join(lines)


def details_table(agg: dict) -> str:
    """Every metric of every task: mean ± std [min, max] across seeds."""
    lines = []
    for dataset, per_opt in agg.items():
        metrics = sorted({m for stats in per_opt.values() for m in stats if m.startswith(("val/", "test/"))})
        lines += [f"\n### {dataset}\n", "| optimizer | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for o in _order(per_opt):
            cells = []
            for m in metrics:
                s = per_opt[o].get(m)
                if s is None:
                    cells.append("—")
                elif s["n"] > 1:
                    cells.append(f"{s['mean']:.4g} ± {s['std']:.2g} [{s['min']:.4g}, {s['max']:.4g}]")
                else:
                    cells.append(f"{s['mean']:.4g}")
            lines.append(f"| {OPTIMIZER_LABELS.get(o, o)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_curves(records: list[RunRecord], out_dir: Path) -> list[Path]:
    """Per dataset: training loss vs step and the primary validation metric vs step,
    one line per optimizer (the mean over seeds; a band spans their min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for dataset in sorted({r.dataset for r in records}):
        runs = [r for r in records if r.dataset == dataset]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for optimizer in _order({r.optimizer for r in runs}):
            for ax, attr in zip(axes, ("loss_curve", "val_curve")):
                curves = [dict(getattr(r, attr)) for r in runs if r.optimizer == optimizer and getattr(r, attr)]
                if not curves:
                    continue
                steps = sorted(set.intersection(*(set(c) for c in curves)))
                if not steps:
                    continue
                values = [[c[s] for c in curves] for s in steps]
                mean = [statistics.fmean(v) for v in values]
                line = ax.plot(steps, mean, label=OPTIMIZER_LABELS.get(optimizer, optimizer), marker="o" if attr == "val_curve" else None, ms=3)
                if len(curves) > 1:
                    ax.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line[0].get_color(), alpha=0.2)
        primary = runs[0].primary_metric
        axes[0].set(title=f"{dataset}: training loss", xlabel="step", ylabel="train/loss")
        axes[0].set_yscale("log")
        axes[1].set(title=f"{dataset}: {primary}", xlabel="step", ylabel=primary)
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.tight_layout()
        path = out_dir / f"{dataset}_curves.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def build_report(
    records: list[RunRecord],
    out_dir: Path,
    *,
    title: str = "clipbench results",
    notes: str = "",
    noise: str | Path | None = None,
    baseline: str = "sgd",
) -> dict[str, Any]:
    """Write ``summary.md``, ``results.json`` and the plots into ``out_dir``.

    Args:
        baseline: the optimizer the paired differences are taken against.
        noise: a gradient-noise results folder (``python -m benchmark noise --out``) whose
            table goes into the report, if it holds results.

    Returns:
        The content of ``results.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    agg = aggregate(records)
    plots = plot_curves(records, out_dir)
    profile = plot_profiles(records, out_dir, baseline, OPTIMIZER_LABELS)
    plots += [profile] if profile is not None else []
    seeds = sorted({r.seed for r in records if r.seed is not None})
    parts = [
        f"# {title}\n",
        notes,
        f"Runs: {len(records)} ({', '.join(sorted({r.dataset for r in records}))}; seeds {seeds}). "
        "Metrics are read at the optimizer's evaluation point (clipped-SSTM: y, averaged clipped-SGD: x̄) "
        "unless a run says otherwise.\n",
        thesis_table(agg, records),
        "\n\n" + statistics_note(seeds, baseline) + "\n",
        f"\n## Paired differences to {OPTIMIZER_LABELS.get(baseline, baseline)}\n",
        _paired_section(agg, records, baseline),
        "\n\nThe thesis's figures for the same table (real data, full budgets), for reference:\n",
        _thesis_reference_table(),
        "\n\n## Time to target\n",
        profile_section(records, baseline, OPTIMIZER_LABELS),
        "\n\n## Every metric\n",
        details_table(agg),
        "\n\n## Runs\n",
        _runs_table(records),
        "\n\n## Plots\n",
        *(f"\n![{p.stem}]({p.name})\n" for p in plots),
    ]
    if noise is not None:
        from .noise.report import noise_section

        parts.append("\n" + noise_section(noise, relative_to=out_dir))
    (out_dir / "summary.md").write_text("\n".join(parts) + "\n")
    results = {"aggregate": agg, "runs": [asdict(r) for r in records], "plots": [p.name for p in plots]}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    return results


def _paired_section(agg: dict, records: list[RunRecord], baseline: str) -> str:
    rows = [(d, TASK_ROWS.get(d, (d,))[0], primary, factor, digits) for d, primary, factor, digits in _rows(agg, records)]
    return paired_table(records, rows, _order({r.optimizer for r in records}), baseline, OPTIMIZER_LABELS)


def _thesis_reference_table() -> str:
    optimizers = ["sgd", "adam", "clipped_sgd", "clipped_sstm"]
    lines = ["| Task | Model | Metric | " + " | ".join(OPTIMIZER_LABELS[o] for o in optimizers) + " |", "|---|---|---|---|---|---|---|"]
    for dataset, values in THESIS.items():
        task, model, label = get_task(dataset).row_labels
        best = max(values.values())
        cells = [f"**{values[o]}**" if values[o] == best else str(values[o]) for o in optimizers]
        lines.append(f"| {task} | {model} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _evaluate_at(info: dict) -> str:
    """``evaluation_point``, with "+ BN" when its BatchNorm statistics were recomputed there."""
    return (info.get("evaluate_at") or "—") + (" + BN" if info.get("bn_recomputed") else "")


def _runs_table(records: list[RunRecord]) -> str:
    lines = ["| dataset | optimizer | seed | evaluate_at | steps | train s | clipped | skipped | source |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r.dataset, _order([r.optimizer]), r.seed or 0)):
        stats = r.info.get("optimizer_stats") or {}
        clipped = f"{stats['clipped_fraction']:.0%}" if "clipped_fraction" in stats else "—"
        skipped = f"{stats['skipped_steps']:.0f}" if "skipped_steps" in stats else "—"
        lines.append(
            f"| {r.dataset} | {OPTIMIZER_LABELS.get(r.optimizer, r.optimizer)} | {r.seed} | {_evaluate_at(r.info)} | "
            f"{r.info.get('global_step') or '—'} | {r.info.get('train_seconds') or '—'} | {clipped} | {skipped} | `{r.source}` |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark report", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run directories, trees of them, or offline W&B runs")
    parser.add_argument("--wandb-project", default=None, help="also read the finished runs of this W&B project, ENTITY/PROJECT (online)")
    parser.add_argument("--out", default=None, help="output directory (default: results/report-<timestamp>)")
    parser.add_argument("--noise", default=None, help="a `python -m benchmark noise` results folder to include")
    parser.add_argument("--baseline", default="sgd", help="optimizer the paired differences are taken against (default: sgd)")
    args = parser.parse_args(argv)
    if not args.runs and not args.wandb_project:
        parser.error("give run directories, or --wandb-project ENTITY/PROJECT")
    import time

    out = Path(args.out or f"results/report-{time.strftime('%Y%m%d-%H%M%S')}")
    records = load_runs(args.runs) if args.runs else []
    if args.wandb_project:
        from .wandb_runs import load_project

        records += load_project(args.wandb_project)
    build_report(records, out, noise=args.noise, baseline=args.baseline)
    print((out / "summary.md").read_text().split("\n\nThe thesis's figures")[0])
    print(f"\nwrote {out}/summary.md, results.json and {len(list(out.glob('*.png')))} plot(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
