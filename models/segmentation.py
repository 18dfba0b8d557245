"""Semantic segmentation (FCN-32s / VGG-16 on Pascal VOC 2012): cross-entropy, mIoU."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from .architectures import build_architecture
from .base import TaskModule

__all__ = ["SegmentationTask"]


class SegmentationTask(TaskModule):
    """Per-pixel cross-entropy ignoring ``ignore_index``; logs ``val/miou`` and
    ``val/pixel_acc``.

    mIoU is computed as in the FCN/VOC protocol: one confusion matrix accumulated over the
    whole validation set (pixels labelled ``ignore_index`` dropped), IoU per class from
    it, then the mean over the classes that occur (torchmetrics ``MulticlassJaccardIndex``,
    ``average="macro"``; under DDP the matrix is summed across ranks).

    Args:
        num_classes: 21 for VOC (20 classes + background).
        ignore_index: the void label (255 in VOC).
        arch, arch_args: the network (``fcn32s`` by default) and its keyword arguments.
        **kwargs: see :class:`~models.base.TaskModule`.
    """

    task = "segmentation"
    primary_metric = "val/miou"

    def __init__(
        self,
        num_classes: int = 21,
        ignore_index: int = 255,
        arch: str = "fcn32s",
        arch_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.net = self._init_net(lambda: build_architecture(arch, num_classes=num_classes, **(arch_args or {})))
        for stage in ("val", "test"):
            # validate_args=False: the per-batch torch.unique check costs a sync each step.
            metrics = {
                "miou": MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="macro", validate_args=False),
                "pixel_acc": MulticlassAccuracy(num_classes, ignore_index=ignore_index, average="micro", validate_args=False),
            }
            setattr(self, f"{stage}_metrics", MetricCollection(metrics, prefix=f"{stage}/"))

    def _shared_step(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        images, masks = batch
        logits = self(images)
        loss = F.cross_entropy(logits, masks, ignore_index=self.ignore_index)
        return loss, logits, masks

    def _update_metrics(self, stage: str, preds: Tensor, targets: Tensor, batch: Any) -> None:
        if stage == "train":
            return
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(preds.detach().argmax(1), targets)
        self.log_dict(metrics, on_step=False, on_epoch=True)
