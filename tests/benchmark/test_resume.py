"""An interrupted-and-resumed run equals the uninterrupted run bit for bit (epoch boundaries)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from benchmark.callbacks import EvaluationPointCallback, RNGStateCallback
from datamodules import VOCDataModule
from models import SegmentationTask
from optim import evaluation_point

pytestmark = pytest.mark.embedded


def _parts(optimizer: str, workers: int):
    # FCN has dropout (global RNG) and VOC's augmentations draw random numbers: both must
    # come out the same after a resume.
    data = VOCDataModule(crop_size=40, batch_size=4, num_workers=workers, persistent_workers=False, seed=3)
    args = {"average": True} if optimizer == "clipped_sgd" else {}
    arch = {"width": 0.0625, "fc_channels": 16, "batch_norm": True}  # BatchNorm: recomputed at the evaluation point
    model = SegmentationTask(optimizer=optimizer, optimizer_args=args, arch_args=arch, init_seed=0)
    return data, model


def _fit(tmp_path, optimizer, workers, epochs, ckpt_path=None):
    pl.seed_everything(0, verbose=False)
    data, model = _parts(optimizer, workers)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        # The evaluation point swaps weights (and BatchNorm statistics) around every
        # validation and in checkpoints: the live state must still resume bit-exactly.
        callbacks=[RNGStateCallback(), EvaluationPointCallback(bn_batches=2), ModelCheckpoint(dirpath=tmp_path, save_last=True)],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return model, trainer


# Every optimizer's state round trip is tested in tests/optim; here the whole run: the
# optimizers with the most state (SSTM's y, z, A_k, k; the averaged iterate; Adam's
# moments), and DataLoader workers, whose seeding is optimizer-independent.
@pytest.mark.parametrize(
    "optimizer, workers", [("clipped_sstm", 0), ("clipped_sgd", 0), ("adam", 0), ("clipped_sstm", 1)]
)
def test_resume_at_epoch_boundary_is_bit_exact(tmp_path, optimizer, workers):
    straight, straight_trainer = _fit(tmp_path / "straight", optimizer, workers, epochs=2)
    _fit(tmp_path / "interrupted", optimizer, workers, epochs=1)
    resumed, resumed_trainer = _fit(tmp_path / "interrupted", optimizer, workers, epochs=2, ckpt_path="last")
    assert resumed_trainer.global_step == straight_trainer.global_step == 6
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    opt_a, opt_b = straight_trainer.optimizers[0], resumed_trainer.optimizers[0]
    for a, b in zip(evaluation_point(opt_a), evaluation_point(opt_b)):
        assert torch.equal(a, b)
    for key, value in getattr(opt_a, "global_state", {}).items():
        assert torch.equal(value, opt_b.global_state[key]), key


def test_without_the_rng_callback_a_resume_would_differ(tmp_path):
    """The test above can fail: dropout draws from the global RNG."""
    straight, _ = _fit(tmp_path / "a", "sgd", 0, epochs=2)
    _fit(tmp_path / "b", "sgd", 0, epochs=1)
    torch.manual_seed(12345)  # what an unrestored RNG would hold in a new process
    pl.seed_everything(0, verbose=False)
    data, model = _parts("sgd", 0)
    torch.manual_seed(999)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=2, limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[ModelCheckpoint(dirpath=tmp_path / "b", save_last=True)])
    trainer.fit(model, datamodule=data, ckpt_path=str(tmp_path / "b" / "last.ckpt"))
    assert not all(torch.equal(a, b) for a, b in zip(straight.parameters(), model.parameters()))
