"""Image classification (ResNet-18 on ImageNet-100 in the thesis): cross-entropy, top-1/top-5."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from .architectures import build_architecture
from .base import TaskModule

__all__ = ["ClassificationTask"]


class ClassificationTask(TaskModule):
    """Classification with cross-entropy; logs ``train/loss``, ``train/top1``,
    ``val/top1``, ``val/top5`` (fractions in [0, 1]).

    Args:
        num_classes: classes (the CLI links it to the DataModule's ``num_classes``).
        arch: a name from ``models.architectures.ARCHITECTURES``.
        arch_args: the architecture's keyword arguments besides ``num_classes``.
        label_smoothing: of the cross-entropy (0 in the reference protocol).
        **kwargs: optimizer, schedule and speed options of
            :class:`~models.base.TaskModule`.
    """

    task = "classification"
    primary_metric = "val/top1"

    def __init__(
        self,
        num_classes: int = 100,
        arch: str = "resnet18",
        arch_args: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.net = self._init_net(lambda: build_architecture(arch, num_classes=num_classes, **(arch_args or {})))
        top5 = min(5, num_classes)
        for stage in ("train", "val", "test"):
            metrics = {"top1": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
            if stage != "train":
                metrics["top5"] = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, prefix=f"{stage}/"))

    def _shared_step(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        return loss, logits, targets

    def _update_metrics(self, stage: str, preds: Tensor, targets: Tensor, batch: Any) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(preds.detach(), targets)
        self.log_dict(metrics, on_step=False, on_epoch=True)
