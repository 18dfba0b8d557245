"""Every registered optimizer inside a real Lightning Trainer (closure path), fp32 and bf16."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from optim import build_optimizer, list_optimizers


class TinyRegression(pl.LightningModule):
    def __init__(self, optimizer: str) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        self.optimizer_name = optimizer
        self.training_steps = 0

    def training_step(self, batch, batch_idx):
        self.training_steps += 1
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return build_optimizer(self.optimizer_name, self.parameters())


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = x[:, :1] * 2 + 0.1 * torch.randn(64, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
@pytest.mark.parametrize("name", list_optimizers())
def test_trainer_fit_runs_the_closure(name, precision):
    pl.seed_everything(0, verbose=False)
    model = TinyRegression(name)
    before = [p.detach().clone() for p in model.parameters()]
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=precision,
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, _loader())
    # Lightning raises if the closure is not run; also check it ran once per step.
    assert model.training_steps == 6
    assert trainer.global_step == 6
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    optimizer = trainer.optimizers[0]
    if hasattr(optimizer, "global_state"):
        assert optimizer.global_state["step"].item() == 6
