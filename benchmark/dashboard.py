"""``python -m benchmark dashboard --entity E --project P``: saved W&B workspaces of the bench.

One saved workspace (view) per task, filtered to that task's runs (``config.dataset``)
and grouped by optimizer (``config.optimizer``), so every line is the mean over seeds with
a min-max band. Its sections: the primary validation metric and the training loss against
the global step, the optimizer's clip fraction (``optim/clipped_fraction``) and the
gradient-noise tail index α of the noise probe (``noise/alpha``). Built with W&B's
``wandb-workspaces`` library; saving needs W&B online (an API key and network).

``build_workspaces`` makes the objects without touching the network, so they can be
inspected (and are tested) offline.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .grid import DATASETS
from .tune import PRIMARY

__all__ = ["PANELS", "STEP", "build_workspaces", "main"]

#: The x axis of every panel: Lightning's WandbLogger step metric.
STEP = "trainer/global_step"
#: section title -> metric (``None``: the task's primary validation metric).
PANELS: dict[str, str | None] = {
    "validation metric": None,
    "training loss": "train/loss_step",
    "clip fraction": "optim/clipped_fraction",
    "gradient noise α": "noise/alpha",
}


def build_workspaces(entity: str, project: str, datasets: Sequence[str] = DATASETS, *, band: str = "minmax") -> list:
    """One ``wandb_workspaces.workspaces.Workspace`` per task (unsaved).

    Args:
        entity: W&B entity (user or team).
        project: W&B project the runs were logged to (``--run.wandb_project``).
        datasets: the tasks, by dataset name.
        band: the band around each optimizer's mean over seeds: ``minmax``, ``stddev``
            or ``stderr``.

    Raises:
        ValueError: an empty entity/project, an unknown dataset or band.
    """
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    if not entity or not project:
        raise ValueError(f"Invalid W&B path: entity={entity!r}, project={project!r} (both must be non-empty)")
    if band not in ("minmax", "stddev", "stderr"):
        raise ValueError(f"Invalid band: {band!r} (must be minmax, stddev or stderr)")
    unknown = [d for d in datasets if d not in PRIMARY]
    if unknown:
        raise ValueError(f"Invalid dataset(s): {', '.join(unknown)} (known: {', '.join(PRIMARY)})")
    workspaces = []
    for dataset in datasets:
        sections = []
        for title, metric in PANELS.items():
            metric = metric or PRIMARY[dataset]
            plot = wr.LinePlot(
                title=f"{dataset}: {metric}",
                x=STEP,
                y=[metric],
                log_y=metric.startswith("train/loss") or None,
                groupby="optimizer",
                groupby_aggfunc="mean",
                groupby_rangefunc=band,
            )
            sections.append(ws.Section(name=title, panels=[plot], is_open=True))
        workspaces.append(
            ws.Workspace(
                entity=entity,
                project=project,
                name=f"clipbench: {dataset}",
                sections=sections,
                runset_settings=ws.RunsetSettings(
                    filters=ws.And(ws.Config("dataset") == dataset), groupby=[ws.Config("optimizer")]
                ),
            )
        )
    return workspaces


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark dashboard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--entity", required=True, help="W&B entity (user or team)")
    parser.add_argument("--project", default="clipbench", help="W&B project of the runs")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), help="tasks, one workspace each")
    parser.add_argument("--band", default="minmax", choices=("minmax", "stddev", "stderr"), help="band over seeds")
    parser.add_argument("--print", action="store_true", help="describe the workspaces, save nothing (works offline)")
    args = parser.parse_args(argv)
    workspaces = build_workspaces(args.entity, args.project, args.datasets, band=args.band)
    if args.print:
        for workspace in workspaces:
            panels = "; ".join(f"{s.name}: {s.panels[0].y[0]}" for s in workspace.sections)
            print(f"{workspace.name} ({args.entity}/{args.project}, grouped by optimizer): {panels}")
        return 0
    from .tracking import resolve_wandb_mode

    if resolve_wandb_mode("auto") != "online":
        raise ValueError(
            "W&B is not online (no API key or no network): saving a workspace needs the W&B server. "
            "Run `wandb login` where W&B is reachable, or pass --print to inspect the workspaces offline."
        )
    for workspace in workspaces:
        saved = workspace.save()
        print(f"saved {saved.name}: {saved.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
