"""Seed s pairs the runs: every optimizer starts from the same weights and sees the same batches."""

from __future__ import annotations

import pytest
import torch

from benchmark.grid import config_stack
from benchmark.lightning_cli import ClipbenchCLI

pytestmark = pytest.mark.embedded


def _built(optimizer: str, seed: int, tmp_path):
    """Model and DataModule as `python -m benchmark fit` builds them for the bench preset."""
    args = [a for p in config_stack("imagenet", optimizer, "bench") for a in ("--config", str(p))]
    args += [
        "--seed_everything", str(seed), "--run.wandb", "disabled", "--run.dir", str(tmp_path / optimizer),
        "--data.init_args.train_crop_size", "32", "--data.init_args.val_resize_size", "36", "--data.init_args.val_crop_size", "32",
    ]  # fmt: skip
    cli = ClipbenchCLI(args=args, run=False)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def _first_batches(datamodule, n=2):
    it = iter(datamodule.train_dataloader())
    return [next(it) for _ in range(n)]


def test_seed_pairs_the_runs(tmp_path, monkeypatch):
    monkeypatch.setattr("sys.argv", ["benchmark"])  # the CLI gets its arguments from args= only
    model_a, data_a = _built("sgd", 3, tmp_path)
    model_b, data_b = _built("clipped_sstm", 3, tmp_path)
    model_c, data_c = _built("sgd", 4, tmp_path)
    # Same seed, two optimizers: identical initial weights and identical first batches.
    assert model_a.optimizer_name != model_b.optimizer_name
    assert model_a.init_seed == model_b.init_seed == 3 and data_a.seed == data_b.seed == 3
    state_a, state_b, state_c = model_a.state_dict(), model_b.state_dict(), model_c.state_dict()
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key
    batches_a = _first_batches(data_a)
    for (xa, ya), (xb, yb) in zip(batches_a, _first_batches(data_b)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # Another seed: another start and another order (so the checks above can fail).
    assert any(not torch.equal(state_a[k], state_c[k]) for k in state_a if k.endswith("weight"))
    assert not torch.equal(batches_a[0][1], _first_batches(data_c, 1)[0][1])
