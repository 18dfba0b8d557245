"""SLURM: the sbatch template, submission, and the preemption path
(signal -> checkpoint -> requeue request -> resume), single-process and DDP.

No SLURM controller runs here, so `scontrol` and `sbatch` are stand-ins on PATH that
record how they were called, and the processes get the environment srun gives its
tasks; everything else (Lightning's SLURMEnvironment, the requeue callback's SIGUSR1
handling, the hpc checkpoint, the CLI's resume choice) is the real code path.
(`benchmark/slurm/local_cluster_check.sh` runs the same against a real slurmctld.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cluster import main as slurm_main
from benchmark.grid import config_stack

pytestmark = pytest.mark.embedded


def _fake_tool(folder: Path, name: str, record: Path, stdout: str = "") -> None:
    tool = folder / name
    tool.write_text(f'#!/bin/sh\necho "$@" >> {record}\necho "{stdout}"\n')
    tool.chmod(0o755)


def test_dry_run_renders_a_requeueable_ddp_job(tmp_path, capsys):
    code = slurm_main([
        "--datasets", "imagenet", "--optimizers", "clipped_sstm", "--nodes", "2", "--gpus", "8",
        "--data-dir", "/datasets/imagenet100", "--partition", "gpu", "--runs-dir", str(tmp_path), "--dry-run",
    ])
    assert code == 0
    script = (tmp_path / "imagenet" / "clipped_sstm" / "seed0" / "job.sbatch").read_text()
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue", "#SBATCH --partition=gpu"):
        assert line in script
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    for flag in ("--trainer.num_nodes 2", "--trainer.devices 8", "--trainer.strategy ddp", "--ckpt_path last",
                 "--data.init_args.data_dir /datasets/imagenet100", "imagenet/clipped_sstm.yaml"):
        assert flag in srun
    assert script in capsys.readouterr().out


def test_submission_calls_sbatch_and_skips_finished_runs(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch.log"
    _fake_tool(bin_dir, "sbatch", record, "Submitted batch job 101")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    runs = tmp_path / "runs"
    (runs / "voc" / "sgd" / "seed1").mkdir(parents=True)
    (runs / "voc" / "sgd" / "seed1" / "final.json").write_text("{}")
    code = slurm_main(["--datasets", "voc", "--optimizers", "sgd", "adam", "--seeds", "1", "--data-dir", "/d", "--runs-dir", str(runs)])
    assert code == 0
    calls = record.read_text().split()
    assert calls == [str((runs / "voc" / "adam" / "seed1" / "job.sbatch").resolve())]
    out = capsys.readouterr().out
    assert "done already" in out and "Submitted batch job 101" in out


def test_missing_data_dir_and_sbatch_are_clear_errors(tmp_path, monkeypatch, capsys):
    assert slurm_main(["--datasets", "voc", "--runs-dir", str(tmp_path)]) == 2
    assert "--data-dir is required" in capsys.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_main(["--datasets", "voc", "--data-dir", "/d", "--runs-dir", str(tmp_path)]) == 2
    assert "sbatch not found" in capsys.readouterr().err


def _wait_for(predicate, timeout, proc):
    start = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early ({proc.returncode}):\n{proc.stdout.read()[-3000:]}")
        if time.monotonic() - start > timeout:
            raise AssertionError("timed out")
        time.sleep(0.2)


def _slurm_env(bin_dir: Path, data_root: Path, job_id: str, ntasks: int, rank: int) -> dict[str, str]:
    from datamodules.embedded.store import ENV_VAR

    env = {
        **os.environ,
        ENV_VAR: str(data_root),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        # What srun gives one task of a one-node job.
        "SLURM_JOB_ID": job_id, "SLURM_JOB_NAME": "clipbench", "SLURM_NTASKS": str(ntasks),
        "SLURM_NTASKS_PER_NODE": str(ntasks), "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0", "SLURM_NNODES": "1", "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("WANDB_MODE", None)
    return env


def _fit_command(run_dir: Path, *extra: str) -> list[str]:
    stack = [a for p in config_stack("imagenet", "clipped_sstm", "bench") for a in ("--config", str(p))]
    return [
        sys.executable, "-m", "benchmark", "fit", *stack,
        "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "6", "--trainer.limit_val_batches", "1",
        # validation and a checkpoint once per epoch, 2 batches per step (the bench validates twice an epoch)
        "--trainer.val_check_interval", "1.0", "--trainer.accumulate_grad_batches", "2",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "1",
        "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36", "--data.init_args.val_crop_size", "32",
        "--run.dir", str(run_dir), "--run.wandb", "offline", "--ckpt_path", "last", *extra,
    ]


@pytest.mark.slow
def test_preemption_signal_checkpoints_requeues_and_resumes(tmp_path, embedded_data_root):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.log"
    _fake_tool(bin_dir, "scontrol", record)
    run_dir = tmp_path / "run"
    env = _slurm_env(bin_dir, embedded_data_root, "4242", 1, 0)
    command = _fit_command(run_dir)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # After the first epoch's checkpoint, training is in epoch 2: preempt it there.
        _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 300, first)
        first.send_signal(signal.SIGUSR1)
        _wait_for(lambda: record.exists() and (run_dir / "hpc_ckpt_1.ckpt").exists(), 120, first)
        # SLURM ends the job after the requeue (SIGTERM, then SIGKILL).
        first.kill()
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    assert record.read_text().split() == ["requeue", "4242"]
    assert not (run_dir / "final.json").exists()

    # The requeued job: the same command, SLURM counting the restart.
    second = subprocess.run(command, env={**env, "SLURM_RESTART_COUNT": "1"}, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "hpc_ckpt_1.ckpt" in second.stdout + second.stderr  # Lightning names the checkpoint it restores
    final = json.loads((run_dir / "final.json").read_text())
    assert final["global_step"] == 3 * 6 // 2  # accumulate_grad_batches=2 for clipped-SSTM
    # The second launch logged into its own CSV segment, starting where the hpc
    # checkpoint was taken (mid-epoch 2), not from step 0.
    import csv

    with (run_dir / "csv" / "1" / "metrics.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("step")]
    assert min(steps) >= 3
    ids = json.loads((run_dir / "wandb_run.json").read_text())
    assert ids["restarts"] == 1  # offline: a second, linked W&B run
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2


@pytest.mark.slow
def test_ddp_ranks_signalled_apart_checkpoint_together_and_requeue_once(tmp_path, embedded_data_root):
    """SLURM signals every task, but each at its own moment: here only rank 1 gets it.
    The ranks must still checkpoint at the same batch and keep training (checkpointing
    inside the signal handler, as Lightning's auto-requeue does, deadlocks them)."""
    import socket

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "scontrol.log"
    _fake_tool(bin_dir, "scontrol", record)
    run_dir = tmp_path / "run"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    command = _fit_command(run_dir, "--trainer.devices", "2", "--trainer.strategy", "ddp")
    ranks = [
        subprocess.Popen(
            command,
            env={**_slurm_env(bin_dir, embedded_data_root, "5151", 2, rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    try:
        _wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), 300, ranks[0])
        ranks[1].send_signal(signal.SIGUSR1)
        # With the fake scontrol nothing ends the job: both ranks must train on to the end.
        outputs = [rank.communicate(timeout=300)[0] for rank in ranks]
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
    for rank, output in zip(ranks, outputs):
        assert rank.returncode == 0, output[-3000:]
    assert record.read_text().split() == ["requeue", "5151"]  # once, by rank 0
    assert "SIGUSR1 received" in outputs[0]
    assert sorted(p.name for p in run_dir.glob("hpc_ckpt_*.ckpt")) == ["hpc_ckpt_1.ckpt"]
    import torch

    checkpoint = torch.load(run_dir / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    assert 3 <= checkpoint["global_step"] < 9  # taken in epoch 2 or 3, not at the end
    final = json.loads((run_dir / "final.json").read_text())
    assert final["global_step"] == 9
