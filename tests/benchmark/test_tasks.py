"""The table of tasks: every entry resolves to modules and configs that agree with it, and
the grid, report, run summary, perf and embedded registry read it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from benchmark import grid, report, tasks
from benchmark.callbacks.run_summary import dataset_name
from benchmark.perf import train as perf_train
from benchmark.report import RunRecord, aggregate, thesis_table
from benchmark.tasks import TASKS, get_task, run_directory
from datamodules.embedded import EMBEDDED


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_entry_agrees_with_its_modules_and_configs(task):
    module, datamodule = task.module_class(), task.datamodule_class()
    assert module.task == datamodule.task == task.kind
    assert module.primary_metric == task.primary_metric
    folder = task.config_dir
    data = yaml.safe_load((folder / "data.yaml").read_text())["data"]
    model = yaml.safe_load((folder / "model.yaml").read_text())["model"]
    assert data["class_path"] == task.datamodule and model["class_path"] == task.module
    for optimizer in grid.DEFAULT_OPTIMIZERS:
        assert (folder / f"{optimizer}.yaml").exists(), optimizer
    assert (folder / "embedded.yaml").exists()
    assert task.name in EMBEDDED  # the embedded registry has the same names


def test_names_are_unique_and_in_table_order():
    names = [t.name for t in TASKS]
    assert names == ["imagenet", "voc", "div2k", "text"] and len(set(t.kind for t in TASKS)) == len(TASKS)
    assert grid.DATASETS == tuple(names)
    assert list(report.TASK_ROWS) == names


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="Unknown task \\(dataset\\): 'mnist' \\(valid: imagenet, voc, div2k, text\\)"):
        get_task("mnist")
    with pytest.raises(ValueError, match="Unknown task kind: 'detection'"):
        tasks.task_of_module_kind("detection")


def test_the_language_model_row_and_direction():
    lm = get_task("text")
    assert lm.row_labels == ("LM", "Transformer", "val bpc")
    assert lm.higher_is_better is False and lm.best([1.9, 1.7, 2.4]) == 1.7
    assert get_task("imagenet").best([0.4, 0.5]) == 0.5


def _record(dataset, optimizer, value, seed=0):
    task = get_task(dataset)
    return RunRecord("x", dataset, task.kind, optimizer, seed, task.primary_metric, {task.primary_metric: value})


def test_report_bolds_the_lowest_bpc_and_the_highest_top1():
    # Three paired seeds with a constant gap: significantly best in the metric's direction.
    records = []
    for seed, shift in enumerate((0.0, 0.01, -0.01)):
        records += [_record("text", "sgd", 2.5 + shift, seed), _record("text", "adam", 1.75 + shift, seed)]
        records += [_record("imagenet", "sgd", 0.3 + shift, seed), _record("imagenet", "adam", 0.2 + shift, seed)]
    table = thesis_table(aggregate(records), records).splitlines()
    assert table[0] == "| Task | Model | Metric | SGD | Adam |"
    assert table[2].startswith("| ImCl | ResNet-18 | Top-1 (%) | **30.00") and "| 20.00" in table[2]
    assert table[3].startswith("| LM | Transformer | val bpc | 2.500") and "| **1.750" in table[3]  # after ImCl
    # One seed: nothing is significantly best, nothing bold.
    single = [r for r in records if r.seed == 0]
    assert "**" not in thesis_table(aggregate(single), single)


def test_run_directory_is_one_rule(tmp_path):
    assert run_directory(tmp_path, "text", "adam", 3) == tmp_path / "text" / "adam" / "seed3"
    from benchmark.lightning_cli import default_run_dir

    assert default_run_dir("voc", "sgd", 0) == Path("runs/voc/sgd/seed0")
    args = argparse.Namespace(
        datasets=["text"], optimizers=["clipped_sstm"], seeds=[1], preset="bench", data_dir=None, runs_dir=str(tmp_path),
        wandb="disabled", epochs=None, devices=None, nodes=None, accelerator=None, extra=[],
    )  # fmt: skip
    (run,) = grid.plan(args)
    assert run.run_dir == tmp_path / "text" / "clipped_sstm" / "seed1"
    configs = [Path(run.command[i + 1]).relative_to(tasks.CONFIG_DIR) for i, a in enumerate(run.command) if a == "--config"]
    assert configs == [Path(p) for p in ("trainer.yaml", "text/data.yaml", "text/model.yaml", "text/clipped_sstm.yaml", "text/embedded.yaml", "text/embedded_clipped_sstm.yaml")]


def test_run_summary_names_the_dataset_from_the_table(tmp_path):
    from datamodules import TextDataModule

    (tmp_path / "enwik8").write_bytes(b"x" * 100)
    assert dataset_name(TextDataModule(data_dir=str(tmp_path))) == "text"
    assert dataset_name(None) is None


def test_perf_workloads_build_the_table_modules():
    for workload in perf_train.TASKS.values():
        assert isinstance(workload, perf_train.PerfWorkload)
        get_task(workload.task)  # a known dataset
    assert get_task(perf_train.TASKS["srresnet"].task).module == "models.SuperResolutionTask"
