"""ResNet-18 for image classification: torchvision's network, never pretrained.

References:
    He, Zhang, Ren, Sun. "Deep Residual Learning for Image Recognition." CVPR 2016
    (arXiv:1512.03385, 2015). Table 1, the 18-layer column.
    Goyal et al. "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour."
    arXiv:1706.02677, 2017 (zero-initialised last BN of each residual branch).
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as _tv_resnet

__all__ = ["resnet18"]


def resnet18(num_classes: int = 1000, zero_init_residual: bool = False) -> nn.Module:
    """Build torchvision's ResNet-18 with random weights.

    The ImageNet stem (7×7 stride-2 conv + max pool) is kept as in the paper, so the
    network downsamples by 32: a 64 px input reaches the global pool at 2×2.

    Parameter count: 11,689,512 at 1000 classes (torchvision's figure, the paper's
    "11.7M"); each class costs 513 (512 weights + 1 bias), so 100 classes give
    11,227,812.

    Args:
        num_classes: size of the final linear layer (the logits).
        zero_init_residual: start every residual branch at zero (the last BN's weight
            is zero-initialised) so each block begins as the identity (Goyal et al.
            2017).

    Returns:
        A ``torchvision.models.ResNet``; ``forward(x: [B, 3, H, W]) -> [B, num_classes]``.

    Raises:
        ValueError: if ``num_classes < 1``.
    """
    if num_classes < 1:
        raise ValueError(f"Invalid num_classes: {num_classes} (must be >= 1)")
    # weights=None: the suite never downloads, and benchmarks compare optimizers from
    # scratch (a pretrained start would hide the optimizer's early behaviour).
    return _tv_resnet.resnet18(
        weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual
    )
