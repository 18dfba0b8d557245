"""Lightning checkpoints of the heavy-tail family: fit, save, resume == an uninterrupted fit."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from .test_lightning import TinyRegression, _loader

# The wrapper (policy state beside the base's), the two-part Muon, one core-style class.
NAMES = ["sgd_autoclip", "adamw_zclip", "sgd_agc", "muon", "nsgdm"]


def _fit(name, epochs, tmp_path, ckpt_path=None, save=None):
    pl.seed_everything(0, verbose=False)
    model = TinyRegression(name)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, _loader(), ckpt_path=ckpt_path)
    if save is not None:
        trainer.save_checkpoint(save)
    return model, trainer


@pytest.mark.parametrize("name", NAMES)
def test_lightning_resume_is_bit_exact(name, tmp_path):
    straight, _ = _fit(name, 2, tmp_path)
    ckpt = tmp_path / "epoch1.ckpt"
    _fit(name, 1, tmp_path, save=ckpt)
    resumed, trainer = _fit(name, 2, tmp_path, ckpt_path=ckpt)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    opt = trainer.optimizers[0]
    if hasattr(opt, "policy"):  # the policy's history/EMA came back with the checkpoint
        assert opt.policy.state and int(opt.global_state["step"]) == 16
