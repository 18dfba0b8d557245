"""Train every registered optimizer for a few steps, in 1 process or under DDP (gloo/CPU).

Run by tests/benchmark/test_ddp.py, either directly (one process) or through torchrun
(several processes, possibly as several "nodes" on localhost). Each rank writes what the
test compares: the final parameters, the optimizer's evaluation point and optimizer-level
state, and the validation metrics. ``--task`` picks the task module: classification (a
small CNN) or language_model (a small GPT on random byte sequences).

    python ddp_script.py OUT --devices 1 --num-nodes 1 --global-batch 8 [--task language_model]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmark.callbacks import EvaluationPointCallback  # noqa: E402
from datamodules import UnpaddedDistributedSampler  # noqa: E402
from datamodules.sampler import EpochShuffleSampler  # noqa: E402
from models import ClassificationTask, LanguageModelTask  # noqa: E402
from optim import evaluation_point, list_optimizers  # noqa: E402


class TinyTask(ClassificationTask):
    """The real classification task (loss, metrics, optimizer factory, evaluation
    point) on a small CNN. No BatchNorm: per-rank batch statistics differ from the
    global ones, and torch's SyncBatchNorm runs on GPU modules only."""

    def __init__(self, **kwargs):
        super().__init__(num_classes=3, **kwargs)
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)
        )


class TinyLanguageModel(LanguageModelTask):
    """The real language-model task (cross-entropy, val/bpc, optimizer factory, evaluation
    point) on a one-layer GPT over 16 token values."""

    def __init__(self, **kwargs):
        torch.manual_seed(0)
        super().__init__(vocab_size=16, block_size=8, arch_args={"n_layer": 1, "n_head": 2, "d_model": 8}, **kwargs)


class Data(pl.LightningDataModule):
    def __init__(self, per_rank_batch: int, task: str = "classification") -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        if task == "language_model":
            tokens = torch.randint(0, 16, (48, 9), generator=g)
            x, y = tokens[:, :-1], tokens[:, 1:]
        else:
            x = torch.randn(48, 3, 8, 8, generator=g)
            y = torch.randint(0, 3, (48,), generator=g)
            # Heavy-tailed inputs, so the clipping optimizers clip.
            x = x * torch.distributions.StudentT(2.5).sample((48, 1, 1, 1))
        self.train_set = TensorDataset(x, y)
        self.val_set = TensorDataset(x[:9], y[:9])  # odd: a padding sampler would repeat one
        self.per_rank_batch = per_rank_batch

    def train_dataloader(self):
        # The suite's training sampler: one permutation per epoch from (seed, epoch), rank r
        # taking its positions r, r+n, ...; so the ranks' batches together are exactly the
        # single process's batch.
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochShuffleSampler(self.train_set, num_replicas=world, rank=rank, seed=5)
        return DataLoader(self.train_set, batch_size=self.per_rank_batch, sampler=sampler)

    def val_dataloader(self):
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            sampler = UnpaddedDistributedSampler(self.val_set, self.trainer.world_size, self.trainer.global_rank)
        return DataLoader(self.val_set, batch_size=2, sampler=sampler)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--num-nodes", type=int, default=1)
    parser.add_argument("--global-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--task", choices=("classification", "language_model"), default="classification")
    args = parser.parse_args()
    world = args.devices * args.num_nodes
    results = {}
    for name in list_optimizers():
        # Big enough to move the weights, with clip levels the gradients exceed.
        optimizer_args = {"clip_level": 0.05} if name.startswith("clipped") else {}
        task = TinyLanguageModel if args.task == "language_model" else TinyTask
        model = task(optimizer=name, optimizer_args=optimizer_args)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=args.devices,
            num_nodes=args.num_nodes,
            strategy="ddp" if world > 1 else "auto",
            max_steps=args.steps,
            limit_val_batches=None,
            val_check_interval=args.steps,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[EvaluationPointCallback()],  # validation at the evaluation point, as the runner does
        )
        trainer.fit(model, datamodule=Data(args.global_batch // world, args.task))
        optimizer = trainer.optimizers[0]
        results[name] = {
            "params": [p.detach().clone() for p in model.parameters()],
            "evaluation_point": [e.detach().clone() for e in evaluation_point(optimizer)],
            "global_state": {k: v.clone() for k, v in getattr(optimizer, "global_state", {}).items()},
            "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "world_size": trainer.world_size,
        }
    torch.save(results, Path(args.out) / f"rank{int(os.environ.get('RANK', 0))}.pt")


if __name__ == "__main__":
    main()
