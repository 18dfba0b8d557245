"""``--probe-noise`` (the noise probe of ``python -m benchmark run``) and ``--noise`` (the noise
law of ``python -m benchmark convex``): one name, one meaning each."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import grid
from benchmark.convex.cli import build_parser as convex_parser


def test_run_probe_noise_switch_probes_first_and_reports(monkeypatch, tmp_path):
    calls = []
    # Only the switch's effect is under test: what runs first, what the report is given.
    monkeypatch.setattr(grid, "probe_noise", lambda args, out, *a, **k: calls.append(("probe", out)))
    monkeypatch.setattr(grid, "execute", lambda runs, *a, **k: calls.append(("execute", len(runs))) or [])
    monkeypatch.setattr(grid, "build_report", lambda *a, **k: calls.append(("report", k.get("noise"))))
    monkeypatch.setattr(grid, "load_runs", lambda *a, **k: [])
    monkeypatch.setattr(grid.GridRun, "finished", property(lambda self: True))
    (tmp_path / "summary.md").write_text("table\n")
    argv = ["--datasets", "div2k", "--optimizers", "sgd", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path)]

    assert grid.main([*argv, "--probe-noise"]) == 0
    assert calls == [("probe", tmp_path / "noise"), ("execute", 1), ("report", tmp_path / "noise")]
    calls.clear()
    assert grid.main(argv) == 0  # no switch: no probe, no noise section
    assert calls == [("execute", 1), ("report", None)]


def test_run_probe_noise_parses_and_old_name_is_a_clear_error(capsys):
    parser = grid.build_parser()
    assert parser.parse_args(["--probe-noise"]).probe_noise is True
    assert parser.parse_args([]).probe_noise is False
    assert parser.parse_args(["--noise-batches", "12"]).noise_batches == 12
    assert "--probe-noise" in parser.format_help()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--noise"])
    assert exc.value.code == 2
    assert "--noise was renamed --probe-noise" in capsys.readouterr().err


def test_convex_noise_is_the_noise_law():
    parser = convex_parser()
    assert parser.parse_args(["--noise", "gaussian,pareto:2.5"]).noise == ["gaussian", "pareto:2.5"]
    assert parser.parse_args([]).noise == ["gaussian", "student_t:2.5"]
    assert not hasattr(parser.parse_args([]), "probe_noise")


def test_makefile_bench_uses_the_probe_switch():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    bench = next(line for line in makefile.splitlines() if "-m benchmark run --preset bench" in line)
    assert "--probe-noise" in bench.split() and "--noise" not in bench.split()
