"""``OptimizerStatsCallback``: the clip statistics it logs mean what they say."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from benchmark.callbacks.optimizer_stats import OptimizerStatsCallback
from optim import ClippedSGD


class _Tiny(pl.LightningModule):
    def __init__(self, make) -> None:
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.make = make

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return self.make(self.parameters())


def _fit(make, steps=4, **callback_args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    data = DataLoader(TensorDataset(x, 3 * x[:, :1] + 1), batch_size=8)
    model = _Tiny(make)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        log_every_n_steps=1,  # the callback logs only on the steps that reach the loggers
        callbacks=[OptimizerStatsCallback(**callback_args)],
        logger=pl.loggers.CSVLogger("."),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    return trainer.logged_metrics


@pytest.mark.parametrize("clipping", ["layer_wise", "coordinate_wise", "norm"])
def test_unclipped_steps_log_factor_one_and_no_clipping(tmp_path, monkeypatch, clipping):
    monkeypatch.chdir(tmp_path)
    metrics = _fit(lambda p: ClippedSGD(p, lr=0.01, clip_level=float("inf"), clipping=clipping))
    assert metrics["optim/clip_factor"].item() == 1.0
    assert metrics["optim/clipped_fraction"].item() == 0.0


def test_clipped_steps_are_logged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = _fit(lambda p: ClippedSGD(p, lr=0.01, clip_level=1e-3, clipping="layer_wise"))
    assert 0.0 < metrics["optim/clip_factor"].item() < 1.0
    assert metrics["optim/clipped_fraction"].item() == 1.0
    assert metrics["optim/grad_norm"].item() > 1e-3


def test_grad_norm_for_optimizers_that_do_not_clip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = _fit(lambda p: torch.optim.SGD(p, lr=0.01))
    assert metrics["optim/grad_norm"].item() > 0 and "optim/clip_factor" not in metrics


def test_grad_norm_for_all_off_skips_the_extra_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = _fit(lambda p: torch.optim.SGD(p, lr=0.01), grad_norm_for_all=False)
    assert "optim/grad_norm" not in metrics and "optim/lr" in metrics
    # A clipping optimizer measures its own norm: logged either way.
    clipped = _fit(lambda p: ClippedSGD(p, lr=0.01, clip_level=1.0), grad_norm_for_all=False)
    assert clipped["optim/grad_norm"].item() > 0
