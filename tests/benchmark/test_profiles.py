"""Time-to-target and performance profiles on synthetic histories, against hand-computed answers."""

from __future__ import annotations

import math

import pytest

from benchmark.profiles import (
    Reached,
    performance_profile,
    profile_section,
    targets,
    time_to_target,
    times_per_task,
)
from benchmark.report import RunRecord, build_report

INF = math.inf


def _run(dataset, optimizer, seed, final, history, metric="val/top1"):
    hist = [{"step": s, "seconds": t, "value": v} for s, t, v in history]
    return RunRecord(source="x", dataset=dataset, task="t", optimizer=optimizer, seed=seed, primary_metric=metric, metrics={metric: final}, info={"val_history": hist})


def test_time_to_target_first_crossing():
    history = [(10, 1.0, 0.2), (20, 2.5, 0.5), (30, 4.0, 0.45), (40, 5.0, 0.7)]
    assert time_to_target(history, 0.5, higher_is_better=True) == Reached(20, 2.5)  # >= counts
    assert time_to_target(history, 0.6, higher_is_better=True) == Reached(40, 5.0)
    assert time_to_target(history, 0.8, higher_is_better=True) is None
    loss = [(10, 1.0, 3.0), (20, 2.0, 2.0), (30, 3.0, 1.5)]
    assert time_to_target(loss, 2.0, higher_is_better=False) == Reached(20, 2.0)
    assert time_to_target(loss, 1.0, higher_is_better=False) is None
    with pytest.raises(ValueError, match="Invalid target"):
        time_to_target(history, math.nan, higher_is_better=True)


def _records():
    # imagenet: SGD finals 0.5 and 0.7 -> target 0.6.
    return [
        _run("imagenet", "sgd", 0, 0.5, [(10, 1.0, 0.3), (20, 2.0, 0.5)]),  # never reaches 0.6
        _run("imagenet", "sgd", 1, 0.7, [(10, 1.5, 0.4), (20, 3.0, 0.7)]),  # step 20, 3.0 s
        _run("imagenet", "adam", 0, 0.8, [(10, 2.0, 0.65), (20, 4.0, 0.8)]),  # step 10, 2.0 s
        _run("imagenet", "adam", 1, 0.9, [(10, 1.0, 0.5), (20, 2.0, 0.9)]),  # step 20, 2.0 s
        # voc (lower-is-better loss as primary here): SGD final 1.0 -> target 1.0
        _run("voc", "sgd", 0, 1.0, [(5, 1.0, 2.0), (10, 2.0, 1.0)], "val/loss"),  # step 10
        _run("voc", "adam", 0, 1.2, [(5, 0.5, 1.5), (10, 1.0, 1.2)], "val/loss"),  # never
    ]


def test_targets_and_times_per_task_by_hand():
    records = _records()
    assert targets(records, "sgd") == pytest.approx({"imagenet": 0.6, "voc": 1.0})
    steps = times_per_task(records, "sgd", "steps")
    assert steps == {"imagenet": {"adam": [10.0, 20.0], "sgd": [INF, 20.0]}, "voc": {"adam": [INF], "sgd": [10.0]}}
    seconds = times_per_task(records, "sgd", "seconds")
    assert seconds["imagenet"] == {"adam": [2.0, 2.0], "sgd": [INF, 3.0]}
    with pytest.raises(ValueError, match="Invalid measure"):
        times_per_task(records, "sgd", "epochs")


def test_performance_profile_by_hand():
    times = {
        "a": {"sgd": 100.0, "adam": 50.0, "clip": 75.0},  # ratios 2, 1, 1.5
        "b": {"sgd": 30.0, "adam": INF, "clip": 60.0},  # ratios 1, never, 2
        "c": {"sgd": INF, "adam": INF, "clip": INF},  # nobody: never for all
        "d": {"sgd": 10.0, "adam": 40.0},  # clip missing: never; ratios 1, 4
    }
    taus = [1.0, 1.5, 2.0, 4.0, 10.0]
    rho = performance_profile(times, taus)
    assert rho["sgd"] == [0.5, 0.5, 0.75, 0.75, 0.75]
    assert rho["adam"] == [0.25, 0.25, 0.25, 0.5, 0.5]
    assert rho["clip"] == [0.0, 0.25, 0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="Invalid taus"):
        performance_profile(times, [0.5])
    with pytest.raises(ValueError, match="no task"):
        performance_profile({}, [1.0])
    with pytest.raises(ValueError, match="Invalid times"):
        performance_profile({"a": {"sgd": math.nan}}, [1.0])


def test_profile_section_and_plot_in_the_report(tmp_path):
    records = _records()
    section = profile_section(records, "sgd", {"sgd": "SGD", "adam": "Adam"})
    # imagenet Adam: steps [10, 20] -> median 15; seconds [2, 2] -> 2.0 s; SGD: [inf, 20] -> never
    assert "| imagenet | 0.6 | Adam | 2/2 | 15 | 2.0 s |" in section
    assert "| imagenet | 0.6 | SGD | 1/2 | never | never |" in section
    assert "| voc | 1 | Adam | 0/1 | never | never |" in section
    assert "| voc | 1 | SGD | 1/1 | 10 | 2.0 s |" in section
    results = build_report(records, tmp_path)
    assert "performance_profile.png" in results["plots"]
    assert (tmp_path / "performance_profile.png").stat().st_size > 1000
    assert "## Time to target" in (tmp_path / "summary.md").read_text()


def test_history_falls_back_to_the_logged_curve():
    record = RunRecord(source="x", dataset="d", task="t", optimizer="sgd", seed=0, primary_metric="val/top1", metrics={"val/top1": 0.4}, val_curve=[(5, 0.2), (9, 0.4)])
    assert times_per_task([record], "sgd", "steps") == {"d": {"sgd": [9.0]}}
    assert math.isnan(times_per_task([record], "sgd", "seconds")["d"]["sgd"][0])
