"""The grid's execution flags (--parallel, --accelerator, --verbose) and the CLI's
CLIPBENCH_TRACEBACK switch do what their --help says."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from benchmark import cli, grid
from benchmark.grid import GridRun, build_parser, execute, plan


@pytest.mark.parametrize(
    ("parallel", "gpus", "devices", "slots"),
    [
        ("auto", 0, None, [None]),  # CPU: one run at a time unless asked
        ("2", 0, None, [None, None]),  # CPU: two concurrent runs, no CUDA_VISIBLE_DEVICES
        ("auto", 4, None, ["0", "1", "2", "3"]),  # one run per GPU
        ("auto", 4, 2, [None]),  # DDP runs over several devices: one at a time
        ("6", 4, None, ["0", "1", "2", "3", "0", "1"]),  # more runs than GPUs: round robin
        ("1", 4, None, [None]),
    ],
)
def test_parallel_slots(monkeypatch, parallel, gpus, devices, slots):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert grid._gpu_slots(parallel, devices) == slots


def test_accelerator_reaches_every_run_command(tmp_path):
    args = build_parser().parse_args(["--datasets", "div2k", "--optimizers", "sgd", "adam", "--accelerator", "cpu", "--runs-dir", str(tmp_path)])
    args.extra = []
    runs = plan(args)
    assert len(runs) == 2
    for run in runs:
        i = run.command.index("--trainer.accelerator")
        assert run.command[i + 1] == "cpu"
    args.accelerator = None
    assert all("--trainer.accelerator" not in r.command for r in plan(args))


def _echo_run(tmp_path: Path, name: str) -> GridRun:
    run_dir = tmp_path / name
    code = f"import pathlib; print('hello from {name}'); pathlib.Path({str(run_dir)!r}, 'final.json').write_text('{{}}')"
    return GridRun("div2k", name, 0, run_dir, [sys.executable, "-c", code], {}, "fp")


def test_verbose_streams_output_instead_of_writing_stdout_log(tmp_path, capfd):
    quiet = _echo_run(tmp_path, "quiet")
    assert execute([quiet], [None], verbose=False) == []
    assert "hello from quiet" in (quiet.run_dir / "stdout.log").read_text()
    loud = _echo_run(tmp_path, "loud")
    assert execute([loud], [None], verbose=True) == []
    assert not (loud.run_dir / "stdout.log").exists()
    assert "hello from loud" in capfd.readouterr().out


def test_parallel_slots_run_concurrently(tmp_path):
    runs = []
    for name in ("a", "b"):
        run = _echo_run(tmp_path, name)
        stamp = str(tmp_path / f"{name}.times")
        # Each run records when it started and ended; two slots must overlap them.
        run.command[-1] = (
            f"import time; t0 = time.time(); time.sleep(1.5); open({stamp!r}, 'w').write(f'{{t0}} {{time.time()}}'); "
            + run.command[-1]
        )
        runs.append(run)
    assert execute(runs, [None, None], verbose=False) == []
    (a0, a1), (b0, b1) = ([float(v) for v in (tmp_path / f"{n}.times").read_text().split()] for n in ("a", "b"))
    assert b0 < a1 and a0 < b1
    assert all(r.finished for r in runs)


def test_traceback_switch(monkeypatch, capsys):
    def bad(argv):
        raise ValueError("Invalid thing: 3 (must be 2)")

    monkeypatch.setitem(cli.SUBCOMMANDS, "bad", ("benchmark.tests_bad", ""))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: type("M", (), {"main": staticmethod(bad)}))
    monkeypatch.delenv("CLIPBENCH_TRACEBACK", raising=False)
    assert cli.main(["bad"]) == 2
    err = capsys.readouterr().err
    assert "error: Invalid thing: 3 (must be 2)" in err and "CLIPBENCH_TRACEBACK=1" in err
    monkeypatch.setenv("CLIPBENCH_TRACEBACK", "1")
    with pytest.raises(ValueError, match="Invalid thing"):
        cli.main(["bad"])


def test_concurrent_cpu_runs_split_the_cores(monkeypatch):
    monkeypatch.setattr(grid.os, "cpu_count", lambda: 8)
    assert grid.cpu_threads(1, {}) == {}
    assert grid.cpu_threads(2, {}) == {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"}
    assert grid.cpu_threads(16, {}) == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert grid.cpu_threads(2, {"OMP_NUM_THREADS": "3"}) == {}  # the user's choice stands
