"""The TaskModule options a config can set: LR schedules, weight-decay groups, label
smoothing and torch.compile, each checked against what it promises."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models import ClassificationTask
from models.base import parameter_groups


def _task(**kwargs) -> ClassificationTask:
    return ClassificationTask(num_classes=4, arch="resnet18", optimizer="sgd", optimizer_args={"lr": 1.0, "momentum": 0.0}, **kwargs)


def _lrs(task: ClassificationTask, total_steps: int, steps: int) -> list[float]:
    """The learning rate at each of the first ``steps`` steps of a run of ``total_steps``."""
    task._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    config = task.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_constant_schedule_returns_only_the_optimizer():
    task = _task()
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    assert isinstance(task.configure_optimizers(), torch.optim.SGD)


def test_cosine_schedule_with_warmup_matches_the_formula():
    lrs = _lrs(_task(lr_scheduler="cosine", lr_scheduler_args={"warmup_steps": 2}), total_steps=10, steps=10)
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_poly_schedule_with_floor_matches_the_formula():
    task = _task(lr_scheduler="poly", lr_scheduler_args={"power": 2.0, "min_factor": 0.1})
    lrs = _lrs(task, total_steps=5, steps=5)
    assert lrs == pytest.approx([0.1 + 0.9 * (1 - s / 5) ** 2 for s in range(5)], rel=1e-12)


def test_step_schedule_is_per_epoch():
    task = _task(lr_scheduler="step", lr_scheduler_args={"step_size": 2, "gamma": 0.5})
    task._trainer = SimpleNamespace(estimated_stepping_batches=100)
    config = task.configure_optimizers()
    assert config["lr_scheduler"]["interval"] == "epoch"
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]


@pytest.mark.parametrize(
    ("kind", "args", "match"),
    [
        ("constant", {"gamma": 0.1}, "takes no lr_scheduler_args"),
        ("cosine", {"gama": 0.1}, r"Unknown lr_scheduler_args for 'cosine': \['gama'\]"),
        ("step", {"warmup_steps": 3}, r"Unknown lr_scheduler_args for 'step'"),
    ],
)
def test_bad_scheduler_args_are_named(kind, args, match):
    task = _task(lr_scheduler=kind, lr_scheduler_args=args)
    task._trainer = SimpleNamespace(estimated_stepping_batches=10)
    with pytest.raises(ValueError, match=match):
        task.configure_optimizers()


def test_unknown_scheduler_is_rejected_at_construction():
    with pytest.raises(ValueError, match="Invalid lr_scheduler: 'linear'"):
        _task(lr_scheduler="linear")


def test_weight_decay_groups_leave_biases_and_norms_undecayed():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(net[0].weight), id(net[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, BN weight and bias, linear bias
    (everything,) = parameter_groups(net, 0.1, decay_norm_and_bias=True)
    assert everything["weight_decay"] == 0.1 and len(everything["params"]) == 6


def test_decay_norm_and_bias_reaches_the_optimizer():
    kwargs = dict(optimizer_args={"lr": 0.1, "weight_decay": 0.01})
    split = ClassificationTask(num_classes=4, **kwargs).configure_optimizers()
    single = ClassificationTask(num_classes=4, decay_norm_and_bias=True, **kwargs).configure_optimizers()
    assert [g["weight_decay"] for g in split.param_groups] == [0.01, 0.0]
    assert [g["weight_decay"] for g in single.param_groups] == [0.01]


def test_label_smoothing_is_the_smoothed_cross_entropy():
    torch.manual_seed(0)
    task = ClassificationTask(num_classes=4, label_smoothing=0.2, init_seed=0)
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    loss, logits, _ = task._shared_step((images, targets))
    log_p = F.log_softmax(logits.detach().double(), dim=1)
    # (1 - ε)·(-log p_y) + ε·mean_c(-log p_c), by hand
    expected = (0.8 * -log_p[torch.arange(2), targets] + 0.2 * -log_p.mean(dim=1)).mean()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    plain = F.cross_entropy(logits, targets)
    assert float(loss.detach()) != pytest.approx(float(plain.detach()), rel=1e-5)


def test_compile_runs_the_network_through_torch_compile(monkeypatch):
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return lambda x: torch.full((x.shape[0], 4), 7.0)

    monkeypatch.setattr(torch, "compile", fake_compile)
    task = ClassificationTask(num_classes=4, compile=True)
    task.configure_model()
    task.configure_model()  # Lightning may call it again: compiled once
    assert compiled == [task.net]
    assert torch.equal(task(torch.randn(2, 3, 32, 32)), torch.full((2, 4), 7.0))
    eager = ClassificationTask(num_classes=4)
    eager.configure_model()
    assert eager(torch.randn(2, 3, 32, 32)).shape == (2, 4) and compiled == [task.net]
