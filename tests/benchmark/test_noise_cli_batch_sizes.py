"""``python -m benchmark noise --batch-sizes``: the tasks' list, the usage errors, one tiny run."""

from __future__ import annotations

import csv
import json

import pytest

from benchmark.grid import DATASETS, config_stack
from benchmark.noise.cli import ProbeTarget, main, probe_targets, task_names
from benchmark.noise.report import read_summaries


def test_targets_come_from_the_task_names_and_their_configs():
    assert task_names() == tuple(DATASETS)
    targets = probe_targets(task_names(), "sgd")
    assert targets == [ProbeTarget(d, config_stack(d, "sgd", "bench")) for d in DATASETS]
    assert all(t.batch_sizes is None for t in targets)  # the default rule decides


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-sizes", "2", "0"], "--batch-sizes 0: must be >= 1"),
        (["--batch-sizes", "2", "4", "--batch-size", "4"], "--batch-size and --batch-sizes exclude each other"),
        (["--batch-sizes", "2", "16", "--num-samples", "16"], "--num-samples 16 must exceed the largest of --batch-sizes, 16"),
    ],
)
def test_bad_batch_sizes_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.embedded
def test_two_batch_sizes_at_initialisation_and_after_training(tmp_path, embedded_data_root, capsys):
    argv = ["--quick", "--datasets", "div2k", "--batch-sizes", "4", "2", "--train-steps", "1", "--num-batches", "6",
            "--no-progress", "--out", str(tmp_path), "--", "--data.init_args.batch_size", "4",
            "--data.init_args.patch_size", "24"]
    assert main(argv) == 0
    summaries = read_summaries(tmp_path)
    assert [(s.batch_size, s.step) for s in summaries] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert {s.subset_size for s in summaries} == {8}  # one subset: --quick's 2 batches of the largest size

    rows = [line.split("|") for line in (tmp_path / "noise_table.md").read_text().splitlines()
            if line.startswith("| div2k |")]
    assert [(r[5].strip(), r[2].strip()) for r in rows] == [("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    assert all(r[9].strip() in ("yes", "no") for r in rows)
    with open(tmp_path / "noise_table.csv", newline="") as f:
        assert [(r["batch_size"], r["step"]) for r in csv.DictReader(f)] == [("2", "0"), ("2", "1"), ("4", "0"), ("4", "1")]
    for b in (2, 4):
        assert (tmp_path / "div2k" / f"div2k_b{b}_step1_hist.png").is_file()

    task = json.loads((tmp_path / "summary.json").read_text())["tasks"]["div2k"]
    assert [(p["batch_size"], p["step"]) for p in task["probes"]] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert task["settings"]["batch_sizes"] == [2, 4] and task["settings"]["train_batch_size"] == 4
    assert len(task["verdicts"]) == 2 and set(task["heavy_tailed_batch_sizes"]) <= {2, 4}
    assert "(batch sizes: div2k 2 and 4 (training batch 4))" in (tmp_path / "noise_report.md").read_text()

    stdout = capsys.readouterr().out
    for b in (2, 4):
        assert any(line.startswith("div2k: heavy-tailed: ") and f"with batch size {b}; α" in line
                   for line in stdout.splitlines())
    # the Lightning run logs one set of noise metrics per batch size
    header = next((tmp_path / "div2k" / "run").glob("csv/*/metrics.csv")).read_text().splitlines()[0]
    assert "noise/b2/alpha" in header and "noise/b4/alpha" in header
