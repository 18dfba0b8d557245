"""``python -m benchmark convex``: help, argument errors, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from benchmark.convex.cli import main


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--runs", "--iters", "--dim", "--problems", "--methods", "--noise", "--quick", "--seed", "--out", "--device"):
        assert option in text


@pytest.mark.parametrize(
    "argv",
    [["--noise", "student_t:1.5"], ["--methods", "lbfgs"], ["--batch", "0"], ["--runs", "0"], ["--problems", "lasso"]],
)
def test_invalid_arguments_exit_2(argv, capsys):
    assert main(argv + ["--no-progress"]) == 2
    assert "error" in capsys.readouterr().err


def test_tiny_run_writes_tables_json_and_plots(tmp_path, capsys):
    out = tmp_path / "convex"
    argv = [
        "--problems", "quadratic,logistic", "--noise", "pareto:2.5", "--batch", "theorem,1", "--logistic-batch", "theorem,1",
        "--methods", "sgd,clipped_sstm,adam", "--runs", "20", "--iters", "120", "--dim", "5",
        "--tune-runs", "10", "--sources", "theory,tuned", "--jobs", "1", "--no-progress", "--out", str(out),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "### Quantiles of f(output) − f*" in printed and "clipped-SSTM" in printed
    summary = (out / "summary.md").read_text()
    assert summary.count("## ") >= 4  # one section per experiment
    results = json.loads((out / "results.json").read_text())
    names = [e["name"] for e in results["experiments"]]
    assert names == ["quadratic_pareto2.5_mtheorem", "quadratic_pareto2.5_m1", "logistic_data_mtheorem", "logistic_data_m1"]
    fixed = results["experiments"][1]
    assert {t["source"] for t in fixed["trajectories"]} == {"theory", "tuned"}
    assert set(fixed["sweep"]) == {"sgd", "clipped_sstm", "adam"}
    assert all(len(t["output"]["q0.99"]) == len(t["checkpoints"]) for t in fixed["trajectories"])
    assert {s["method"] for s in fixed["slopes"]} == {"sgd", "clipped_sstm", "adam"}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert "quadratic_pareto2.5_m1_tuned.png" in pngs and "logistic_data_m1_overlay.png" in pngs
    assert all((out / p).stat().st_size > 10_000 for p in pngs)
