"""benchmark.launch: a forked ``python -m benchmark`` run behaves as a new interpreter would
(its own environment, log and exit status; the same results)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmark import launch
from benchmark.grid import GridRun, execute


def _wait(proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the forked run did not end"
        time.sleep(0.1)
    return proc.poll()


def _run(tmp_path, argv, env=None, fork=True):
    log_path = tmp_path / "log.txt"
    with open(log_path, "w") as log:
        proc = launch.start([sys.executable, "-m", "benchmark", *argv], {**os.environ, **(env or {})}, log, fork=fork)
        code = _wait(proc)
    return proc, code, log_path.read_text()


def test_forked_run_writes_its_log_and_exit_status(tmp_path):
    proc, code, text = _run(tmp_path, ["optimizers"])
    assert not isinstance(proc, subprocess.Popen)
    assert code == 0 and "clipped_sstm" in text
    _, code, text = _run(tmp_path, ["no-such-command"])
    assert code == 2 and "unknown command 'no-such-command'" in text


def test_forked_run_gets_exactly_its_environment(tmp_path):
    _, code, text = _run(tmp_path, ["tune", "--trials", "0", "--out", str(tmp_path / "t")])
    assert code == 2 and "error: Invalid --trials" in text and "Traceback" not in text
    _, code, text = _run(tmp_path, ["tune", "--trials", "0", "--out", str(tmp_path / "t")], env={"CLIPBENCH_TRACEBACK": "1"})
    assert code != 0 and "Traceback" in text and "ValueError: Invalid --trials" in text


def test_other_commands_are_not_forked(tmp_path):
    with open(tmp_path / "log", "w") as log:
        proc = launch.start([sys.executable, "-c", "print('plain')"], dict(os.environ), log, fork=True)
        assert isinstance(proc, subprocess.Popen) and proc.wait() == 0
    assert (tmp_path / "log").read_text().strip() == "plain"
    assert launch.forkable([sys.executable, "-m", "benchmark", "fit"])
    assert not launch.forkable(["/usr/bin/env", "python", "-m", "benchmark", "fit"])


def test_forked_fit_equals_a_new_interpreter(tmp_path):
    """The same tiny fit through the grid, forked and exec'd: identical final metrics."""
    from benchmark.grid import config_stack

    finals = {}
    for fork in (True, False):
        run_dir = tmp_path / ("fork" if fork else "exec")
        cmd = [sys.executable, "-m", "benchmark", "fit"]
        for path in config_stack("text", "clipped_sgd", "bench"):
            cmd += ["--config", str(path)]
        cmd += ["--seed_everything", "0", "--run.dir", str(run_dir), "--run.wandb", "disabled", "--trainer.max_steps", "6",
                "--trainer.limit_val_batches", "2", "--trainer.enable_progress_bar", "false"]
        run = GridRun("text", "clipped_sgd", 0, run_dir, cmd, {"OMP_NUM_THREADS": "1"}, "fp")
        assert execute([run], [None], verbose=False, fork=fork) == []
        finals[fork] = json.loads((run_dir / "final.json").read_text())
    assert finals[True]["global_step"] == finals[False]["global_step"] == 6
    assert finals[True]["metrics"] == finals[False]["metrics"]
