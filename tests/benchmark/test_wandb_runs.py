"""Reading runs from a W&B project: the conversion (offline, fake API objects) and the arguments."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from benchmark.report import main as report_main
from benchmark.wandb_runs import STEP, load_project, record_from_api_run


class FakeRun(SimpleNamespace):
    def scan_history(self, keys):
        return [{k: row[k] for k in keys if k in row} for row in self.rows if any(k in row for k in keys if k != STEP)]


def _run(seed, top1, state="finished", task="classification"):
    rows = [
        {STEP: 1, "train/loss_step": 2.0, "_runtime": 1.0},
        {STEP: 2, "train/loss_step": 1.5, "val/top1": top1 / 2, "_runtime": 2.5},
        {STEP: 4, "val/top1": top1, "_runtime": 5.0},
    ]
    config = {"task": task, "dataset": "imagenet", "optimizer": "sgd", "seed": seed, "eval_at": "evaluation_point"}
    return FakeRun(config=config, summary={"val/top1": top1, "_runtime": 5.0, "note": "x"}, rows=rows, state=state, url=f"https://w/{seed}", path=["e", "p", str(seed)])


def test_record_from_an_api_run():
    record = record_from_api_run(_run(3, 0.5))
    assert (record.dataset, record.optimizer, record.seed, record.primary_metric) == ("imagenet", "sgd", 3, "val/top1")
    assert record.metrics == {"val/top1": 0.5}
    assert record.loss_curve == [(1, 2.0), (2, 1.5)]
    assert record.val_curve == [(2, 0.25), (4, 0.5)]
    assert record.info["val_history"] == [{"step": 2, "seconds": 2.5, "value": 0.25}, {"step": 4, "seconds": 5.0, "value": 0.5}]
    assert record_from_api_run(_run(0, 0.5, task="something else")) is None


def test_load_project_keeps_finished_clipbench_runs():
    api = SimpleNamespace(runs=lambda path: [_run(0, 0.4), _run(1, 0.6, state="running"), _run(2, 0.5, task=None)])
    records = load_project("e/p", api)
    assert [r.seed for r in records] == [0]
    with pytest.raises(FileNotFoundError, match="no finished clipbench runs"):
        load_project("e/p", SimpleNamespace(runs=lambda path: []))
    with pytest.raises(ValueError, match="must be ENTITY/PROJECT"):
        load_project("justproject", api)


def test_report_arguments(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        report_main([])
    assert "--wandb-project" in capsys.readouterr().err
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(ValueError, match="W&B is not online"):
        report_main(["--wandb-project", "e/p"])
