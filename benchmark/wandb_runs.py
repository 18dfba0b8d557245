"""Runs read straight from a W&B project (``python -m benchmark report --wandb-project E/P``).

Each finished W&B run of the project that carries clipbench's run metadata (``task``,
``dataset``, ``optimizer``, ``seed`` in its config) becomes a :class:`~benchmark.report.RunRecord`:
metrics from its summary, curves and the validation history (step, ``_runtime`` seconds,
value) from its history. Needs W&B online; the conversion itself takes any object with
the public ``wandb.apis.public.Run`` attributes, so it is tested offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .report import PRIMARY, TASK_DATASET, RunRecord

__all__ = ["STEP", "load_project", "record_from_api_run"]

STEP = "trainer/global_step"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def record_from_api_run(run: Any) -> RunRecord | None:
    """The record of one W&B API run, or None when it is not a clipbench run."""
    config = dict(run.config)
    task = config.get("task")
    if task not in PRIMARY:
        return None
    primary = PRIMARY[task]
    metrics = {k: v for k, v in ((k, _number(v)) for k, v in dict(run.summary).items()) if v is not None and "/" in k}
    loss, val, history = [], [], []
    for row in run.scan_history(keys=[STEP, "train/loss_step"]):
        if _number(row.get(STEP)) is not None and _number(row.get("train/loss_step")) is not None:
            loss.append((int(row[STEP]), float(row["train/loss_step"])))
    for row in run.scan_history(keys=[STEP, primary, "_runtime"]):
        step, value = _number(row.get(STEP)), _number(row.get(primary))
        if step is not None and value is not None:
            val.append((int(step), value))
            history.append({"step": int(step), "seconds": _number(row.get("_runtime")), "value": value})
    return RunRecord(
        source=getattr(run, "url", None) or "/".join(run.path),
        dataset=config.get("dataset") or TASK_DATASET[task],
        task=task,
        optimizer=config.get("optimizer", "?"),
        seed=config.get("seed"),
        primary_metric=primary,
        metrics=metrics,
        loss_curve=loss,
        val_curve=val,
        info={"evaluate_at": config.get("evaluate_at"), "val_history": history},
    )


def load_project(path: str, api: Any = None, *, states: Iterable[str] = ("finished",)) -> list[RunRecord]:
    """Every finished clipbench run of the W&B project ``ENTITY/PROJECT``.

    Raises:
        ValueError: ``path`` is not ``ENTITY/PROJECT``, or W&B is not online (without ``api``).
        FileNotFoundError: the project holds no finished clipbench run.
    """
    entity, sep, project = path.partition("/")
    if not sep or not entity or not project or "/" in project:
        raise ValueError(f"Invalid --wandb-project: {path!r} (must be ENTITY/PROJECT)")
    if api is None:
        from .tracking import resolve_wandb_mode

        if resolve_wandb_mode("auto") != "online":
            raise ValueError("Invalid --wandb-project: W&B is not online (no API key or no network); read local runs instead")
        import wandb

        api = wandb.Api()
    wanted = set(states)
    records = [r for run in api.runs(path) if run.state in wanted and (r := record_from_api_run(run)) is not None]
    if not records:
        raise FileNotFoundError(f"no finished clipbench runs in the W&B project {path}")
    return records
