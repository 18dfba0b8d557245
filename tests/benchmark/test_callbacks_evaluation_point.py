"""The evaluation-point callback: the swap, BatchNorm statistics at the evaluation point,
checkpoints, ``ckpt_path`` evaluations and exceptions, on a tiny conv net with BatchNorm."""

from __future__ import annotations

import random

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from benchmark.callbacks import EvaluationPointCallback, RNGStateCallback
from benchmark.callbacks.batch_norm import FixedTrainingBatches
from benchmark.callbacks.evaluation_point import LIVE_STATE_KEY
from models.base import TaskModule
from optim import evaluation_point


class TinyTask(TaskModule):
    """conv → BatchNorm → ReLU → dropout → pool → linear, cross-entropy."""

    task = "classification"
    primary_metric = "val/loss"

    def __init__(self, fail_validation: bool = False, **kwargs):
        super().__init__(init_seed=0, **kwargs)
        self.fail_validation = fail_validation
        self.net = self._init_net(
            lambda: nn.Sequential(
                nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
            )
        )  # fmt: skip

    def _shared_step(self, batch):
        images, targets = batch
        logits = self(images)
        return F.cross_entropy(logits, targets), logits, targets

    def _update_metrics(self, stage, preds, targets, batch):
        pass

    def validation_step(self, batch, batch_idx):
        if self.fail_validation and batch_idx == 1:
            raise RuntimeError("validation failed")
        super().validation_step(batch, batch_idx)


class NoisyImages(Dataset):
    """An augmentation drawn from torch's global RNG, as the torchvision presets do."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    transform = None  # a torch.Generator here stands for a pipeline's own generator (albumentations)

    def __getitem__(self, i):
        return self.images[i] + 0.5 * torch.randn(self.images[i].shape, generator=self.transform), self.labels[i]


def _data(n=16, noisy=False):
    g = torch.Generator().manual_seed(1)
    images = 2.0 + 3.0 * torch.randn(n, 3, 6, 6, generator=g)  # far from BatchNorm's initial statistics
    labels = torch.randint(0, 3, (n,), generator=g)
    return NoisyImages(images, labels) if noisy else TensorDataset(images, labels)


def _bn(model):
    return model.net[1]


def _bn_state(model):
    bn = _bn(model)
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


class _Seen(pl.Callback):
    """Parameters and BatchNorm buffers at chosen hooks."""

    def __init__(self):
        self.epoch_start, self.batch, self.epoch_end = [], [], []

    def _state(self, pl_module):
        return [p.detach().clone() for p in pl_module.parameters()] + _bn_state(pl_module)

    def on_validation_epoch_start(self, trainer, pl_module):
        self.epoch_start.append(self._state(pl_module))

    def on_validation_batch_start(self, trainer, pl_module, *args):
        self.batch.append(self._state(pl_module))

    def on_validation_epoch_end(self, trainer, pl_module):
        self.epoch_end.append(self._state(pl_module))

    on_test_batch_start = on_validation_batch_start


def _fit(tmp_path, optimizer="clipped_sstm", callbacks=(), epochs=3, noisy=False, batch_size=16, model=None, **evaluation):
    pl.seed_everything(0, verbose=False)
    model = model or TinyTask(optimizer=optimizer)
    evaluation = EvaluationPointCallback(**{"bn_batches": 1, **evaluation})
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, num_sanity_val_steps=0, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        callbacks=[*callbacks[:1], evaluation, *callbacks[1:]], default_root_dir=tmp_path,
    )  # fmt: skip
    train = DataLoader(_data(noisy=noisy), batch_size=batch_size, shuffle=False, drop_last=True)
    val = DataLoader(_data(8), batch_size=4)
    trainer.fit(model, train, val)
    return model, trainer, evaluation, val


def _at_y(trainer, model):
    """The evaluation point in ``model.parameters()`` order (the optimizer's groups split weights and biases)."""
    point = {}
    for optimizer in trainer.optimizers:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        point.update({id(p): e.detach().clone() for p, e in zip(params, evaluation_point(optimizer))})
    return [point[id(p)] for p in model.parameters()]


def _equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_bn_statistics_are_recomputed_at_the_evaluation_point_and_restored(tmp_path):
    before, after = _Seen(), _Seen()
    model, trainer, _, _ = _fit(tmp_path, callbacks=[before, after])
    y = _at_y(trainer, model)
    x = [p.detach().clone() for p in model.parameters()]
    assert not _equal(x, y)
    # Hand reference (float64): the one BatchNorm batch is the whole training set at y;
    # the statistics are its per-channel mean and unbiased variance (momentum None).
    images = _data().tensors[0].double()
    features = F.conv2d(images, y[0].double(), y[1].double(), padding=1)
    mean = features.mean(dim=(0, 2, 3))
    var = features.var(dim=(0, 2, 3), unbiased=True)
    seen = after.batch[-1]
    assert _equal(seen[: len(y)], y)
    torch.testing.assert_close(seen[-3].double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(seen[-2].double(), var, rtol=1e-5, atol=1e-5)
    assert seen[-1].item() == 1
    assert not torch.allclose(seen[-3], before.epoch_start[-1][-3])  # the live statistics were along x
    # After each validation the live parameters and statistics are back, bit for bit.
    for live, restored in zip(before.epoch_start, after.epoch_end):
        assert _equal(live, restored)
    assert _equal(list(model.parameters()) + _bn_state(model), before.epoch_start[-1])
    assert trainer.callback_metrics["val/evaluate_at_evaluation_point"] == 1.0
    assert trainer.callback_metrics["val/bn_recomputed"] == 1.0
    # The checkpoint: the evaluation point with its statistics, and the live state beside it.
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    checkpoint = torch.load(tmp_path / "end.ckpt", weights_only=True)
    saved, live = checkpoint["state_dict"], checkpoint[LIVE_STATE_KEY]
    assert _equal([saved[k] for k in ("net.0.weight", "net.0.bias")], y[:2])
    assert _equal([saved[f"net.1.{k}"] for k in ("running_mean", "running_var", "num_batches_tracked")], seen[-3:])
    assert _equal([live[k] for k in ("net.0.weight", "net.0.bias")], x[:2])
    assert _equal([live[f"net.1.{k}"] for k in ("running_mean", "running_var", "num_batches_tracked")], _bn_state(model))


def test_switched_off_or_at_the_parameters_the_live_statistics_are_used(tmp_path):
    for settings, swapped in (({"recompute_bn": False}, 1.0), ({"evaluate_at": "parameters"}, 0.0)):
        before, after = _Seen(), _Seen()
        _, trainer, evaluation, _ = _fit(tmp_path, callbacks=[before, after], epochs=2, **settings)
        assert _equal(after.batch[-1][-3:], before.epoch_start[-1][-3:])
        assert trainer.callback_metrics["val/evaluate_at_evaluation_point"] == swapped
        assert trainer.callback_metrics["val/bn_recomputed"] == 0.0 and not evaluation.bn_recomputed
    # SGD's evaluation point is its parameters: nothing to swap or recompute.
    before, after = _Seen(), _Seen()
    _, trainer, _, _ = _fit(tmp_path, optimizer="sgd", callbacks=[before, after], epochs=2)
    assert _equal(after.batch[-1], before.epoch_start[-1])
    assert trainer.callback_metrics["val/evaluate_at_evaluation_point"] == 0.0


def test_the_recomputation_leaves_training_unchanged(tmp_path):
    """Augmentations and dropout draw from the global RNG: a BatchNorm pass that drew
    from it, or left other statistics behind, would change the training run."""
    runs = [_fit(tmp_path, noisy=True, batch_size=4, epochs=2, recompute_bn=flag, bn_batches=2) for flag in (True, False)]
    (a, trainer_a, evaluation_a, _), (b, trainer_b, _, _) = runs
    assert evaluation_a.bn_recomputed
    assert _equal(list(a.parameters()) + _bn_state(a), list(b.parameters()) + _bn_state(b))
    assert _equal(evaluation_point(trainer_a.optimizers[0]), evaluation_point(trainer_b.optimizers[0]))


def test_fixed_training_batches_repeat_and_leave_the_streams_alone():
    dataset = _data(noisy=True)
    dataset.transform = torch.Generator().manual_seed(7)
    loader = DataLoader(dataset, batch_size=4, shuffle=True)
    batches = FixedTrainingBatches(loader, num_batches=2, seed=3)
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate(), dataset.transform.get_state())
    first, second = list(batches), list(batches)
    assert len(first) == 2 and all(_equal(p, q) for p, q in zip(first, second))
    assert torch.equal(torch.get_rng_state(), states[0]) and np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2] and torch.equal(dataset.transform.get_state(), states[3])
    other_rank = FixedTrainingBatches(loader, num_batches=2, seed=3, rank=1, world_size=2)
    assert not set(other_rank.indices) & set(FixedTrainingBatches(loader, 2, 3, rank=0, world_size=2).indices)


def test_test_and_validate_with_ckpt_path_evaluate_the_checkpoint(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="e{epoch}", auto_insert_metric_name=False)
    model, trainer, _, val = _fit(tmp_path, callbacks=[checkpoints])
    first = torch.load(tmp_path / "ckpt" / "e0.ckpt", weights_only=True)["state_dict"]
    expected = [first[n] for n, _ in model.named_parameters()] + [first[f"net.1.{k}"] for k in ("running_mean", "running_var", "num_batches_tracked")]
    final_y = _at_y(trainer, model)
    assert not _equal(expected[: len(final_y)], final_y)
    for run in (trainer.test, trainer.validate):
        seen = _Seen()
        trainer.callbacks.append(seen)
        run(model, val, ckpt_path=str(tmp_path / "ckpt" / "e0.ckpt"), verbose=False)
        trainer.callbacks.remove(seen)
        assert _equal(seen.batch[0], expected), run.__name__
    # Without ckpt_path the fitted module is evaluated at its (final) evaluation point.
    model2, trainer2, _, val2 = _fit(tmp_path / "b")
    seen = _Seen()
    trainer2.callbacks.append(seen)
    trainer2.test(model2, val2, verbose=False)
    assert _equal(seen.batch[0][: len(final_y)], _at_y(trainer2, model2))
    assert trainer2.callback_metrics["test/evaluate_at_evaluation_point"] == 1.0


def test_an_exception_during_validation_restores_the_live_state(tmp_path):
    before = _Seen()
    model = TinyTask(optimizer="clipped_sstm", fail_validation=True)
    with pytest.raises(RuntimeError, match="validation failed"):
        _fit(tmp_path, callbacks=[before], model=model, epochs=1)
    assert len(before.epoch_start) == 1
    assert _equal(list(model.parameters()) + _bn_state(model), before.epoch_start[0])


def test_a_resumed_fit_continues_from_the_live_state(tmp_path):
    # RNGStateCallback: dropout draws from the global RNG.
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    straight, _, _, _ = _fit(tmp_path / "a", callbacks=[RNGStateCallback()], epochs=3)
    _fit(tmp_path / "b", callbacks=[checkpoints, RNGStateCallback()], epochs=2)
    resumed = TinyTask(optimizer="clipped_sstm")
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=3, num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, callbacks=[EvaluationPointCallback(bn_batches=1), RNGStateCallback()])
    trainer.fit(resumed, DataLoader(_data(), batch_size=16, drop_last=True), DataLoader(_data(8), batch_size=4), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert _equal(list(straight.parameters()) + _bn_state(straight), list(resumed.parameters()) + _bn_state(resumed))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="Invalid evaluate_at: 'y' \\(must be one of evaluation_point, parameters\\)"):
        EvaluationPointCallback(evaluate_at="y")
    with pytest.raises(ValueError, match="Invalid bn_batches: 0"):
        EvaluationPointCallback(bn_batches=0)
    with pytest.raises(ValueError, match="Cannot draw BatchNorm batches"):
        FixedTrainingBatches([(torch.zeros(1), 0)], num_batches=1, seed=0)
