"""SRResNet: the residual generator of SRGAN, trained alone with an MSE loss.

References:
    Ledig et al. "Photo-Realistic Single Image Super-Resolution Using a Generative
    Adversarial Network." CVPR 2017 (arXiv:1609.04802), Fig. 4 (generator) and Sec. 3.
    Shi et al. "Real-Time Single Image and Video Super-Resolution Using an Efficient
    Sub-Pixel Convolutional Neural Network." CVPR 2016 (PixelShuffle).
    Lim et al. "Enhanced Deep Residual Networks for Single Image Super-Resolution."
    CVPRW 2017, Table 1 (SRResNet quoted at 1.5M parameters).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SRResNet"]


class _ResidualBlock(nn.Module):
    """conv3×3 - BN - PReLU - conv3×3 - BN, plus the identity (Ledig et al. 2017, Fig. 4)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
            nn.PReLU(),
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def _upsample_stage(num_features: int, factor: int) -> nn.Sequential:
    # Sub-pixel convolution (Shi et al. 2016): compute factor² maps at low resolution,
    # then PixelShuffle rearranges them into a factor× larger image.
    return nn.Sequential(
        nn.Conv2d(num_features, num_features * factor**2, 3, padding=1),
        nn.PixelShuffle(factor),
        nn.PReLU(),
    )


class SRResNet(nn.Module):
    """SRResNet (Ledig et al. 2017): residual blocks at low resolution, sub-pixel upsampling.

    Layers: ``head`` (conv 9×9 → ``num_features``, PReLU); ``body`` (``num_blocks``
    residual blocks, then conv 3×3 + BN); a long skip adds ``head``'s output back;
    ``upsample`` (×2: one stage conv → 4·F, PixelShuffle(2), PReLU; ×4: two such
    stages; ×3: one stage conv → 9·F, PixelShuffle(3), PReLU); ``tail`` (conv 9×9 →
    ``num_channels``). Each PReLU has one learned slope (``nn.PReLU()``), the convs
    keep their biases and use PyTorch's default init; the paper specifies neither.

    Value range: the input is the LR image in [0, 1], fed as is (the paper scales LR to
    [0, 1] too); the output is linear (no tanh) and is compared directly with the HR
    image in [0, 1]. This deviates from the paper, which scales HR to [-1, 1]: with
    an MSE loss on [0, 1] the PSNR is read straight off the loss. No mean is subtracted
    inside: the biases of the first and last convs absorb any fixed shift.

    Parameter count at scale 4 (F=64, 16 blocks, 3 channels): 1,549,462 — head 15,617;
    each block 74,113 (two convs 2·36,928, two BN 2·128, one PReLU), 16 → 1,185,808;
    post-residual conv + BN 37,056; two upsampling stages 2·147,713; tail 15,555. The
    figure usually quoted is "1.5M" (e.g. Lim et al. 2017, Table 1). Scale 2 has one
    stage fewer (1,401,749); scale 3 has one wider stage (1,586,389).

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_channels: image channels in and out (3 for RGB).
        num_features: feature channels throughout (64 in the paper).
        num_blocks: residual blocks (16 in the paper).
        bicubic_residual: add the bicubic upsampling of the input to the output, so the
            network learns the residual to bicubic (VDSR-style). Not in the paper (off by
            default): the CPU benchmark uses it so that a few hundred steps already
            compare optimizers above the bicubic baseline instead of far below it. The
            last conv is then zero-initialised, so the untrained network is bicubic.

    Input: LR images ``[B, num_channels, h, w]``. Output: ``[B, num_channels, h·scale,
    w·scale]``.

    Raises:
        ValueError: ``scale`` not in {2, 3, 4}, or a non-positive size.

    References:
        Ledig et al. "Photo-Realistic Single Image Super-Resolution Using a Generative
        Adversarial Network." CVPR 2017.
    """

    def __init__(
        self,
        scale: int = 4,
        num_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 16,
        bicubic_residual: bool = False,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"Invalid scale: {scale} (must be 2, 3 or 4)")
        for name, value in (
            ("num_channels", num_channels),
            ("num_features", num_features),
            ("num_blocks", num_blocks),
        ):
            if value < 1:
                raise ValueError(f"Invalid {name}: {value} (must be >= 1)")
        self.scale = scale
        self.bicubic_residual = bicubic_residual
        self.head = nn.Sequential(nn.Conv2d(num_channels, num_features, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(
            *(_ResidualBlock(num_features) for _ in range(num_blocks)),
            nn.Conv2d(num_features, num_features, 3, padding=1),
            nn.BatchNorm2d(num_features),
        )
        # ×4 is two ×2 stages (as in the paper), ×3 a single ×3 stage.
        factors = {2: [2], 3: [3], 4: [2, 2]}[scale]
        self.upsample = nn.Sequential(*(_upsample_stage(num_features, f) for f in factors))
        self.tail = nn.Conv2d(num_features, num_channels, 9, padding=4)
        if bicubic_residual:
            # Start exactly at bicubic: what training adds is then the optimizer's doing.
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: LR images ``[B, C, h, w]`` in [0, 1].

        Returns:
            SR images ``[B, C, h·scale, w·scale]`` (not clamped).
        """
        features = self.head(x)
        out = self.tail(self.upsample(features + self.body(features)))
        if self.bicubic_residual:
            out = out + F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return out
