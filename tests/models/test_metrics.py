"""Task metrics against hand-computed values on tiny cases."""

from __future__ import annotations

import math

import pytest
import torch

from models import ClassificationTask, SegmentationTask, SuperResolutionTask
from models.super_resolution import quantize, rgb_to_y

# The metric updates are exercised without a Trainer; their self.log calls only warn.
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")


def _compute(collection) -> dict[str, float]:
    return {k: float(v) for k, v in collection.compute().items()}


def test_top1_top5_by_hand():
    task = ClassificationTask(num_classes=6, arch_args={})
    logits = torch.tensor(
        [
            [9.0, 8, 7, 6, 5, 4],  # target 0: top-1 hit
            [9.0, 8, 7, 6, 5, 4],  # target 4: top-5 hit only
            [9.0, 8, 7, 6, 5, 4],  # target 5: miss both
            [0.0, 0, 0, 0, 9, 0],  # target 4: top-1 hit
        ]
    )
    targets = torch.tensor([0, 4, 5, 4])
    task.val_metrics.update(logits, targets)
    values = _compute(task.val_metrics)
    assert values["val/top1"] == pytest.approx(2 / 4)
    assert values["val/top5"] == pytest.approx(3 / 4)


def test_miou_is_computed_from_one_confusion_matrix_with_ignore():
    task = SegmentationTask(num_classes=3, arch_args={"width": 0.0625, "fc_channels": 8})
    # Image 1: 2x3 pixels, one ignored.     Image 2: only class 2.
    t1 = torch.tensor([[0, 0, 1], [1, 255, 2]])
    p1 = torch.tensor([[0, 1, 1], [1, 0, 2]])  # the ignored pixel's prediction must not count
    t2 = torch.tensor([[2, 2], [2, 2]])
    p2 = torch.tensor([[2, 2], [2, 0]])
    task.val_metrics.update(p1[None], t1[None])
    task.val_metrics.update(p2[None], t2[None])
    # Confusion over the 9 counted pixels (rows: target, cols: prediction):
    #   target 0: [1, 1, 0]; target 1: [0, 2, 0]; target 2: [1, 0, 4]
    # IoU_c = TP / (row + col - TP): c0 = 1/(2+2-1), c1 = 2/(2+3-2), c2 = 4/(5+4-4)
    iou = [1 / 3, 2 / 3, 4 / 5]
    values = _compute(task.val_metrics)
    assert values["val/miou"] == pytest.approx(sum(iou) / 3, abs=1e-6)
    assert values["val/pixel_acc"] == pytest.approx(7 / 9, abs=1e-6)
    # Not the mean of per-image mIoUs (the VOC protocol pools pixels first).
    per_image = (sum([1 / 2, 2 / 3, 1.0]) / 3 + 3 / 4 / 1) / 2
    assert values["val/miou"] != pytest.approx(per_image, abs=1e-3)


def test_rgb_to_y_bt601():
    colors = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]).view(3, 3, 1, 1)
    y = rgb_to_y(colors).flatten()
    torch.testing.assert_close(y, torch.tensor([235.0, 16.0, 16 + 65.481]) / 255)


def test_psnr_is_the_mean_of_per_image_psnr_after_quantize_and_border_crop():
    scale = 2
    task = SuperResolutionTask(scale=scale, arch_args={"num_blocks": 1})
    hr = torch.full((2, 3, 12, 12), 100 / 255)
    sr = hr.clone()
    sr[0, :, scale:-scale, scale:-scale] += 10 / 255  # image 0: error 10 levels inside the crop
    sr[1, :, scale:-scale, scale:-scale] += 2 / 255  # image 1: error 2 levels
    sr[:, :, :scale] = 1.0  # border errors must be cropped away
    sr[0, 0, 5, 5] = 100.4 / 255 + 10 / 255  # rounds to the same 8-bit level
    lr = torch.nn.functional.interpolate(hr, scale_factor=1 / scale, mode="bicubic")
    task._update_metrics("val", sr, hr, (lr, hr))
    values = _compute(task.val_metrics)
    expected = [10 * math.log10(1 / (d / 255) ** 2) for d in (10, 2)]
    assert values["val/psnr"] == pytest.approx(sum(expected) / 2, abs=1e-3)
    # The pooled-MSE PSNR would differ: the metric really is per image.
    pooled = 10 * math.log10(1 / (((10 / 255) ** 2 + (2 / 255) ** 2) / 2))
    assert abs(values["val/psnr"] - pooled) > 1.0
    # Y of a uniform grey shift: Y changes by (65.481+128.553+24.966)/255 of the shift.
    gain = (65.481 + 128.553 + 24.966) / 255
    expected_y = []
    for d in (10, 2):
        err = gain * d / 255
        expected_y.append(10 * math.log10(1 / err**2))
    assert values["val/psnr_y"] == pytest.approx(sum(expected_y) / 2, abs=1e-3)


def test_bicubic_baseline_is_measured_on_the_same_images():
    task = SuperResolutionTask(scale=2, arch_args={"num_blocks": 1})
    ramp = torch.linspace(0.2, 0.8, 32)
    hr = (ramp[None, :] * ramp[:, None]).expand(1, 3, 32, 32).contiguous()
    lr = torch.nn.functional.interpolate(hr, scale_factor=0.5, mode="bicubic", antialias=True)
    noisy = (hr + 0.1 * torch.randn_like(hr)).clamp(0, 1)
    task._update_metrics("val", noisy, hr, (lr, hr))
    model, bicubic = _compute(task.val_metrics), _compute(task.val_bicubic_metrics)
    assert bicubic["val/psnr"] > 35 > model["val/psnr"]  # a smooth image: bicubic is near-perfect
    assert bicubic["val/ssim"] > model["val/ssim"]


def test_quantize_rounds_to_8_bit_levels():
    x = torch.tensor([-0.1, 0.0, 0.5 / 255, 0.51 / 255, 1.2])
    torch.testing.assert_close(quantize(x), torch.tensor([0.0, 0.0, 0.0, 1 / 255, 1.0]))
