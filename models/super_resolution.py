"""Single-image super-resolution (SRResNet on DIV2K): MSE loss, PSNR/SSIM, bicubic baseline."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from .architectures import build_architecture
from .base import TaskModule

__all__ = ["SuperResolutionTask", "quantize", "rgb_to_y"]


def rgb_to_y(images: Tensor) -> Tensor:
    """The Y channel of ITU-R BT.601 (MATLAB's ``rgb2ycbcr``) for RGB in [0, 1]:
    ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``, shape [B, 1, H, W]."""
    weights = images.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (16.0 + (images * weights).sum(1, keepdim=True)) / 255.0


def quantize(images: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as a saved PNG would be."""
    return images.clamp(0, 1).mul(255).round().div(255)


def _metrics(prefix: str) -> MetricCollection:
    # dim=(1, 2, 3): PSNR per image, then the mean (the SR convention), not the PSNR of
    # the pooled squared error.
    def psnr():
        return PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="elementwise_mean")

    return MetricCollection(
        {
            "psnr": psnr(),
            "psnr_y": psnr(),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
            "ssim_y": StructuralSimilarityIndexMeasure(data_range=1.0),
        },
        prefix=prefix,
        compute_groups=False,
    )


class SuperResolutionTask(TaskModule):
    """SR with a pixel MSE loss.

    Validation quantises the output to 8 bits, crops ``scale`` pixels from each border,
    and reports the mean per-image PSNR and SSIM on RGB (``val/psnr``, ``val/ssim``) and
    on the BT.601 Y channel (``val/psnr_y``, ``val/ssim_y``). The same metrics of bicubic
    upsampling of the same LR images are logged beside them (``val/psnr_bicubic``, ...):
    a model below bicubic has not learned.

    Args:
        scale: upscaling factor (2, 3 or 4; the CLI links it to the DataModule's).
        arch, arch_args: the network (``srresnet`` by default) and its keyword arguments.
        **kwargs: see :class:`~models.base.TaskModule`.
    """

    task = "super_resolution"
    primary_metric = "val/psnr"

    def __init__(
        self,
        scale: int = 4,
        arch: str = "srresnet",
        arch_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.scale = scale
        self.net = self._init_net(lambda: build_architecture(arch, scale=scale, **(arch_args or {})))
        for stage in ("val", "test"):
            setattr(self, f"{stage}_metrics", _metrics(f"{stage}/"))
            setattr(self, f"{stage}_bicubic_metrics", _metrics(f"{stage}/"))

    def _shared_step(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        lr, hr = batch
        sr = self(lr)
        return F.mse_loss(sr, hr), sr, hr

    def _update_metrics(self, stage: str, preds: Tensor, targets: Tensor, batch: Any) -> None:
        if stage == "train":
            return
        lr = batch[0]
        bicubic = F.interpolate(lr, size=targets.shape[-2:], mode="bicubic", align_corners=False)
        hr = self._crop(quantize(targets))
        for metrics, images in (
            (getattr(self, f"{stage}_metrics"), preds.detach()),
            (getattr(self, f"{stage}_bicubic_metrics"), bicubic),
        ):
            sr = self._crop(quantize(images.float()))
            for name, metric in metrics.items(keep_base=True):
                if name.endswith("_y"):
                    metric.update(rgb_to_y(sr), rgb_to_y(hr))
                else:
                    metric.update(sr, hr)
        self.log_dict(getattr(self, f"{stage}_metrics"), on_step=False, on_epoch=True)
        bicubic_metrics = getattr(self, f"{stage}_bicubic_metrics")
        for name, metric in bicubic_metrics.items(keep_base=True):
            self.log(f"{stage}/{name}_bicubic", metric, on_step=False, on_epoch=True)

    def _crop(self, images: Tensor) -> Tensor:
        s = self.scale
        return images[..., s:-s, s:-s]
