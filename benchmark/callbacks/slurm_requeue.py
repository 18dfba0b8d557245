"""Checkpoint and requeue a SLURM job when SLURM signals its end, safely under DDP."""

from __future__ import annotations

import os
import signal
import subprocess
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

__all__ = ["SlurmRequeueCallback", "slurm_job_id"]


def _cluster_environment(trainer: pl.Trainer) -> Any:
    """The trainer's cluster environment.

    Lightning 2.x (the range setup.cfg admits) keeps it on its private accelerator
    connector for every strategy; the public ``strategy.cluster_environment`` exists only
    for parallel strategies, so a one-process SLURM job would lose its requeue. Guarded:
    a Lightning without the attribute gets a clear error, not a silent no-op.
    """
    connector = getattr(trainer, "_accelerator_connector", None)
    if connector is None or not hasattr(connector, "cluster_environment"):
        raise RuntimeError(
            "SlurmRequeueCallback needs pytorch-lightning 2.x (trainer._accelerator_connector.cluster_environment); "
            f"this is {pl.__version__}. Install pytorch-lightning>=2.5,<3."
        )
    return connector.cluster_environment


def _hpc_save_path(trainer: pl.Trainer) -> str:
    """Lightning's own name for the next requeue checkpoint (``hpc_ckpt_<n+1>.ckpt``), the
    one its checkpoint connector resumes from (private in Lightning 2.x; guarded as above)."""
    connector = getattr(trainer, "_checkpoint_connector", None)
    if connector is None or not hasattr(connector, "hpc_save_path"):
        raise RuntimeError(
            "SlurmRequeueCallback needs pytorch-lightning 2.x (trainer._checkpoint_connector.hpc_save_path); "
            f"this is {pl.__version__}. Install pytorch-lightning>=2.5,<3."
        )
    return connector.hpc_save_path(trainer.default_root_dir)


def slurm_job_id() -> str | None:
    """The job to requeue: ``<array job>_<task>`` for an array task, else ``SLURM_JOB_ID``."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID")


class SlurmRequeueCallback(pl.Callback):
    """On ``SIGUSR1`` (``#SBATCH --signal=SIGUSR1@90``): save ``hpc_ckpt_<n>.ckpt`` in the
    run directory, then ``scontrol requeue`` the job; training goes on until SLURM ends it.

    It replaces Lightning's own SLURM auto-requeue (the runner builds the trainer with
    ``SLURMEnvironment(auto_requeue=False)``), which saves the checkpoint inside the signal
    handler. Under DDP that handler interrupts each rank at a different point of its
    training step, and the checkpoint's barrier then pairs with a collective of another
    rank's step: the ranks deadlock and the job neither requeues nor ends. Here the handler
    only records the signal. At the end of every training batch the ranks combine their
    flags (one all-reduce of one integer over a CPU gloo group, so no CUDA stream waits),
    and all of them, at the same batch, save the checkpoint together; rank 0 requeues.

    Active only when the trainer runs in a SLURM job (``SLURMEnvironment``). The requeued
    job resumes from the checkpoint through ``--ckpt_path last`` (see ``ClipbenchCLI``).
    """

    def __init__(self) -> None:
        self._signalled = False
        self._handled = False
        self._previous: Any = None
        self._group: Any = None
        self._active = False
        self._signum: int = signal.SIGUSR1

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # Nothing else here: the training step this interrupts must finish untouched.
        self._signalled = True

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        environment = _cluster_environment(trainer)
        if stage != "fit" or not isinstance(environment, SLURMEnvironment):
            return
        if environment.auto_requeue:
            rank_zero_warn(
                "SLURMEnvironment(auto_requeue=True): Lightning checkpoints inside its signal handler, "
                "which can deadlock DDP ranks; clipbench's requeue stays off. Pass "
                "SLURMEnvironment(auto_requeue=False) to use it."
            )
            return
        self._active = True
        self._signalled = self._handled = False
        self._signum = environment.requeue_signal or signal.SIGUSR1
        self._previous = signal.signal(self._signum, self._handler)
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            # Every rank creates it, in the same order: a collective call.
            self._group = dist.new_group(backend="gloo")
        rank_zero_info("SLURM requeue on SIGUSR1 enabled (checkpoint at the next batch end on every rank)")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._active:
            signal.signal(self._signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._active = False
            self._group = None

    def _any_rank_signalled(self) -> bool:
        if self._group is None:
            return self._signalled
        flag = torch.tensor([int(self._signalled)], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._active or self._handled or not self._any_rank_signalled():
            return
        self._handled = True
        # Lightning's own name (hpc_ckpt_<highest + 1>.ckpt), the one it resumes from.
        path = trainer.strategy.broadcast(_hpc_save_path(trainer), src=0)
        rank_zero_info(f"SIGUSR1 received (requeue signal): saving {path} (global step {trainer.global_step})")
        trainer.save_checkpoint(path)  # every rank calls it: it holds a barrier
        if trainer.is_global_zero:
            self._requeue()

    @staticmethod
    def _requeue() -> None:
        job = slurm_job_id()
        if job is None:
            rank_zero_warn("SIGUSR1 received outside a SLURM job (no SLURM_JOB_ID): not requeueing")
            return
        try:
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        except OSError as err:  # no scontrol on PATH
            rank_zero_warn(f"scontrol requeue {job} could not run ({err}). The checkpoint is saved; resubmit the job.")
            return
        if result.returncode == 0:
            rank_zero_info(f"Requeued SLURM job: {job}")
        else:
            rank_zero_warn(
                f"scontrol requeue {job} failed ({result.returncode}): {result.stderr.strip()}. "
                f"The checkpoint is saved; resubmit the job to resume from it."
            )
