"""Each task trains a few steps with every registered optimizer, on the embedded data;
validation and export happen at the optimizer's evaluation point."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from benchmark.callbacks import EvaluationPointCallback
from datamodules import DIV2KDataModule, ImageNetDataModule, VOCDataModule
from models import ClassificationTask, SegmentationTask, SuperResolutionTask
from optim import ClippedSSTM, evaluation_point, list_optimizers

pytestmark = pytest.mark.embedded


def tiny(dataset: str, optimizer: str, **model_kwargs):
    """A small network and small crops, so a step takes well under a second."""
    if dataset == "imagenet":
        data = ImageNetDataModule(num_classes=10, train_crop_size=32, val_resize_size=36, val_crop_size=32, batch_size=8, num_workers=0, persistent_workers=False)
        model = ClassificationTask(num_classes=10, optimizer=optimizer, **model_kwargs)
    elif dataset == "voc":
        data = VOCDataModule(crop_size=48, batch_size=4, num_workers=0, persistent_workers=False)
        model = SegmentationTask(optimizer=optimizer, arch_args={"width": 0.0625, "fc_channels": 16}, **model_kwargs)
    else:
        data = DIV2KDataModule(patch_size=24, repeat=1, val_mode="center_crop", val_crop_size=48, batch_size=4, val_batch_size=4, num_workers=0, persistent_workers=False)
        model = SuperResolutionTask(optimizer=optimizer, arch_args={"num_blocks": 2, "num_features": 16}, **model_kwargs)
    return data, model


def _trainer(tmp_path, evaluation=None, callbacks=(), **kwargs):
    """A small CPU Trainer with the runner's evaluation-point callback (``evaluation``, default settings if None)."""
    defaults = dict(
        accelerator="cpu",
        max_steps=3,
        limit_train_batches=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    callbacks = [evaluation or EvaluationPointCallback(), *callbacks]
    return pl.Trainer(**{**defaults, **kwargs}, callbacks=callbacks)


@pytest.mark.parametrize("optimizer", list_optimizers())
@pytest.mark.parametrize("dataset", ["imagenet", "voc", "div2k"])
def test_task_fits_with_every_optimizer(dataset, optimizer, tmp_path):
    pl.seed_everything(0, verbose=False)
    data, model = tiny(dataset, optimizer, init_seed=0)
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3
    metrics = trainer.callback_metrics
    assert model.primary_metric in metrics
    assert torch.isfinite(metrics[model.primary_metric])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    if dataset == "div2k":
        assert "val/psnr_bicubic" in metrics and "val/ssim_y" in metrics


def test_same_seed_same_initial_weights_for_every_optimizer():
    first = [p.detach().clone() for p in tiny("imagenet", "sgd", init_seed=3)[1].parameters()]
    for optimizer in ("adam", "clipped_sstm"):
        other = list(tiny("imagenet", optimizer, init_seed=3)[1].parameters())
        assert all(torch.equal(a, b) for a, b in zip(first, other))
    different = list(tiny("imagenet", "sgd", init_seed=4)[1].parameters())
    assert not all(torch.equal(a, b) for a, b in zip(first, different))


class _Recorder(pl.Callback):
    """What the network's weights are while validation runs."""

    def __init__(self):
        self.seen = []

    def on_validation_batch_start(self, trainer, pl_module, *args):
        self.seen.append([p.detach().clone() for p in pl_module.net.parameters()])


@pytest.mark.parametrize("evaluate_at", ["evaluation_point", "parameters"])
def test_validation_and_export_use_the_evaluation_point(evaluate_at, tmp_path):
    pl.seed_everything(0, verbose=False)
    data, model = tiny("imagenet", "clipped_sstm")
    recorder = _Recorder()
    evaluation = EvaluationPointCallback(evaluate_at=evaluate_at)
    trainer = _trainer(tmp_path, evaluation, callbacks=[recorder], limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, ClippedSSTM)
    y = evaluation_point(optimizer)
    x = list(model.net.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(x, y))  # y differs from x after steps
    expected = y if evaluate_at == "evaluation_point" else x
    assert all(torch.equal(a, b) for a, b in zip(recorder.seen[-1], expected))
    # After validation the live parameters are back, bit for bit.
    assert all(torch.equal(a, b) for a, b in zip(model.net.parameters(), x))
    assert trainer.callback_metrics["val/evaluate_at_evaluation_point"] == float(evaluate_at == "evaluation_point")
    assert trainer.callback_metrics["val/bn_recomputed"] == float(evaluate_at == "evaluation_point")
    exported = evaluation.evaluation_state_dict(trainer, model)
    names = [n for n, _ in model.named_parameters()]
    for name, tensor in zip(names, expected):
        assert torch.equal(exported[name], tensor)


def test_checkpoint_holds_the_evaluation_point_and_resume_continues_from_x(tmp_path):
    pl.seed_everything(0, verbose=False)
    data, model = tiny("imagenet", "clipped_sstm")
    trainer = _trainer(tmp_path, max_steps=4)
    trainer.fit(model, datamodule=data)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    names = [n for n, _ in model.named_parameters()]
    y = evaluation_point(trainer.optimizers[0])
    x = list(model.parameters())
    for name, yi, xi in zip(names, y, x):
        assert torch.equal(checkpoint["state_dict"][name], yi)
        assert torch.equal(checkpoint["clipbench_live_state_dict"][name], xi)
    # Inference-style load (no trainer): the evaluation point.
    loaded = ClassificationTask.load_from_checkpoint(path, weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), y))
    # Resuming a fit restores x (and the optimizer's y, z).
    _, resumed = tiny("imagenet", "clipped_sstm")
    trainer2 = _trainer(tmp_path, max_steps=4)
    trainer2.fit(resumed, datamodule=data, ckpt_path=str(path))  # already at max_steps: restores only
    assert all(torch.equal(a, b) for a, b in zip(resumed.parameters(), x))
    assert all(torch.equal(a, b) for a, b in zip(evaluation_point(trainer2.optimizers[0]), y))


def test_trainer_clipping_with_a_clipping_optimizer_is_refused(tmp_path):
    data, model = tiny("imagenet", "clipped_sgd")
    with pytest.raises(ValueError, match="Double clipping: trainer.gradient_clip_val=1.0"):
        _trainer(tmp_path, gradient_clip_val=1.0).fit(model, datamodule=data)


def test_bad_optimizer_config_is_named():
    with pytest.raises(ValueError, match="Unknown optimizer 'lamb'; available: adam"):
        ClassificationTask(optimizer="lamb")
    with pytest.raises(ValueError, match="Unknown keyword.*'lipschitz'.*accepted: lr, L, clip_level"):
        ClassificationTask(optimizer="clipped_sstm", optimizer_args={"lipschitz": 1.0})



def test_the_removed_eval_at_is_named():
    with pytest.raises(ValueError, match="Invalid eval_at: 'parameters': model.init_args.eval_at was removed.*--evaluation_point.evaluate_at parameters"):
        ClassificationTask(eval_at="parameters")
    # The old default, which checkpoints made before hold in their hyperparameters, still loads.
    with pytest.warns(DeprecationWarning, match="eval_at is deprecated and ignored"):
        ClassificationTask(num_classes=3, eval_at="evaluation_point")
