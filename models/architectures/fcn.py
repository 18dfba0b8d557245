"""FCN-32s: VGG-16 made fully convolutional, for semantic segmentation.

References:
    Long, Shelhamer, Darrell. "Fully Convolutional Networks for Semantic Segmentation."
    CVPR 2015 (arXiv:1411.4038). Reference code: shelhamer/fcn.berkeleyvision.org
    (``voc-fcn32s/net.py``) and its PyTorch port wkentaro/pytorch-fcn
    (``torchfcn/models/fcn32s.py``).
    Simonyan, Zisserman. "Very Deep Convolutional Networks for Large-Scale Image
    Recognition." ICLR 2015 (arXiv:1409.1556), configuration D (VGG-16).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["FCN32s", "default_vgg16_weights_path"]

# VGG-16 (configuration D): output channels of each conv, "M" = 2×2 max pool.
_VGG16_CFG = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"
)

# Where the upsampled score map is cropped. Composing the layers' coordinate maps
# (input coordinate of an output position), with conv1_1's padding of 100:
#   conv1_1 (k3, p100): x = o - 99;  each ceil-mode 2×2 pool after block k:
#   x = 2^k o + (2^k - 1)/2 - 99, so pool5 gives x = 32 o - 83.5;
#   fc6 (k7, p0): pool5 o = f + 3, so x = 32 f + 12.5;
#   upscore (k64, s32): f = (u - 31.5) / 32, so x = u - 19.
# Input pixel x sits at upscore pixel x + 19: the reference implementations' offset.
# In general (conv1_1 padding p, fc6 padding q) x = u + 81 - 32 q - p: with p = 1, q = 3
# (same_padding) the offset is 16.
_CROP_OFFSET = 19
_SAME_PADDING_CROP_OFFSET = 16
_UPSCORE_KERNEL = 64
_UPSCORE_STRIDE = 32


def default_vgg16_weights_path() -> Path:
    """Where torchvision keeps its ImageNet VGG-16 weights: ``<hub dir>/checkpoints/<file>``.

    The file name comes from ``torchvision.models.VGG16_Weights.IMAGENET1K_V1.url``, so
    this is the path that ``torchvision.models.vgg16(weights="IMAGENET1K_V1")`` fills
    when it downloads (``$TORCH_HOME/hub/checkpoints`` by default).

    Returns:
        The path (which may not exist).
    """
    from torchvision.models import VGG16_Weights

    filename = os.path.basename(VGG16_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _check_weights_file(path: Path) -> None:
    """Raise FileNotFoundError, saying how to get the file, if ``path`` is not a file."""
    if not path.is_file():
        from torchvision.models import VGG16_Weights

        raise FileNotFoundError(
            f"ImageNet VGG-16 weights for FCN32s not found at {path}. clipbench never "
            f"downloads: fetch {VGG16_Weights.IMAGENET1K_V1.url} on a machine with "
            f"internet access and put it at {default_vgg16_weights_path()} "
            "(torchvision's cache, under $TORCH_HOME), or pass weights_path=<file>; "
            "or use pretrained_backbone=False"
        )


def _bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Transposed-conv weight ``[channels, channels, k, k]`` that upsamples bilinearly.

    Each channel maps to itself only (the diagonal); the k×k filter is the outer product
    of the 1-D tent ``1 - |i - c| / f`` with ``f = ceil(k / 2)`` and the centre ``c``
    between the two middle taps for even ``k`` (``upsample_filt`` in the reference code).
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(kernel_size, dtype=torch.float64) - center).abs() / factor
    filt = torch.outer(taps, taps).to(torch.float32)
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


class FCN32s(nn.Module):
    """FCN-32s (Long et al. 2015): VGG-16 convolutions, fc6/fc7 as convs, ×32 upsampling.

    Layers, named so that their indices match torchvision's ``vgg16`` (which makes
    loading its ImageNet weights a key-for-key copy):

    - ``features``: the 13 VGG-16 3×3 convs with ReLU, five 2×2 max pools in ceil mode.
      ``conv1_1`` (``features.0``) pads by 100 so that any input size, however small,
      still leaves fc6 a 7×7 window, as in the reference code.
    - ``classifier``: ``fc6`` (``classifier.0``: 7×7 conv to ``fc_channels``), ReLU,
      dropout, ``fc7`` (``classifier.3``: 1×1 conv), ReLU, dropout.
    - ``score_fr``: 1×1 conv to ``num_classes``, zero-initialised as in the reference
      code (the net starts by predicting uniform class scores).
    - ``upscore``: ``ConvTranspose2d(num_classes, num_classes, 64, stride=32,
      bias=False)`` initialised to bilinear interpolation, then the output is cropped
      at offset 19 to the input's H×W.

    ``upscore`` is fixed by default: the paper's experimental setup keeps the final
    layer's deconvolution filters fixed to bilinear interpolation (only intermediate
    upsampling layers, as in FCN-16s/8s, are learned; ``lr_mult: 0`` in the reference
    prototxt). Fixed, its weight is a buffer rather than a parameter, so no
    optimizer, gradient norm or weight decay ever sees it; the state-dict key
    (``upscore.weight``) is the same either way.

    Initialisation without a pretrained backbone: the VGG and fc convs are He-normal
    (fan-in, ReLU gain) with zero bias. The reference code zero-initialises every conv
    because it always loads VGG-16 first; from scratch that would be a dead network.

    Parameter count at the defaults (21 classes): 134,346,581 trainable
    (VGG-16 convs 14,714,688 + fc6 102,764,544 + fc7 16,781,312 + score_fr 86,037), the
    paper's "134M" (Table 1, FCN-VGG16). A learnable ``upscore`` adds 21·21·64·64 =
    1,806,336, giving 136,152,917.

    Args:
        num_classes: classes scored per pixel (21 for PASCAL VOC: 20 + background).
        pretrained_backbone: load torchvision's ImageNet VGG-16 weights into
            ``features``, fc6 and fc7 (see :meth:`load_vgg16_weights`). Never downloads.
        weights_path: the weights file to load; ``None`` means
            :func:`default_vgg16_weights_path`. Only with ``pretrained_backbone=True``.
        width: multiplier on the VGG conv channels (rounded, at least 1). Not part of the
            paper: it exists so the CPU benchmark fits its time budget.
        fc_channels: channels of fc6 and fc7 (4096 in the paper). Same purpose as
            ``width``.
        dropout: dropout probability after fc6 and fc7 (0.5 in the paper).
        learnable_upsampling: train ``upscore`` (initialised bilinear) instead of
            keeping it fixed.
        batch_norm: a BatchNorm2d after each of the 13 VGG convs (torchvision's
            ``vgg16_bn`` layout, so ``features`` indices shift). Not part of the paper:
            plain VGG-16 trained from scratch needs thousands of steps before it predicts
            anything but background; with batch norm a CPU-sized run learns the objects.
        same_padding: pad ``conv1_1`` by 1 (not 100) and fc6 by 3, so that every layer
            keeps the input's extent and the crop offset becomes 16. The paper's padding of
            100 lets fc6 run unpadded on any input but makes the convs process a
            ``(H+200)×(W+200)`` image: on small crops (96 px: 296 px processed) that is
            almost all of the cost. Not part of the paper; for CPU-sized runs.

    Input: ``[B, 3, H, W]``, any H, W >= 1. With pretrained weights, RGB normalised with
    the ImageNet mean/std (torchvision's convention, not caffe's BGR 0-255).
    Output: per-pixel class scores ``[B, num_classes, H, W]``.

    Raises:
        ValueError: for a non-positive ``num_classes``, ``width`` or ``fc_channels``;
            a dropout outside [0, 1); pretrained weights with ``width != 1`` or
            ``fc_channels != 4096``; ``weights_path`` without ``pretrained_backbone``.
        FileNotFoundError: pretrained weights asked for and the file is absent.

    References:
        Long, Shelhamer, Darrell. "Fully Convolutional Networks for Semantic
        Segmentation." CVPR 2015.
    """

    def __init__(
        self,
        num_classes: int = 21,
        pretrained_backbone: bool = False,
        weights_path: str | None = None,
        width: float = 1.0,
        fc_channels: int = 4096,
        dropout: float = 0.5,
        learnable_upsampling: bool = False,
        batch_norm: bool = False,
        same_padding: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Invalid num_classes: {num_classes} (must be >= 1)")
        if not width > 0:
            raise ValueError(f"Invalid width: {width} (must be > 0)")
        if fc_channels < 1:
            raise ValueError(f"Invalid fc_channels: {fc_channels} (must be >= 1)")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Invalid dropout: {dropout} (must be in [0, 1))")
        if pretrained_backbone and batch_norm:
            raise ValueError(
                "pretrained_backbone=True loads torchvision's plain VGG-16; it has no "
                "batch-norm layers: set batch_norm=False"
            )
        if pretrained_backbone and (width != 1.0 or fc_channels != 4096):
            raise ValueError(
                f"pretrained_backbone=True needs the paper's VGG-16 (width=1.0, "
                f"fc_channels=4096); got width={width}, fc_channels={fc_channels}"
            )
        if weights_path is not None and not pretrained_backbone:
            raise ValueError(
                f"weights_path={weights_path!r} given but pretrained_backbone=False; "
                "set pretrained_backbone=True to load it"
            )
        # Resolved before building: a missing file fails at once, not after allocating
        # the 540 MB network.
        path = None
        if pretrained_backbone:
            path = Path(weights_path) if weights_path is not None else default_vgg16_weights_path()
            _check_weights_file(path)
        self.num_classes = num_classes
        self.crop_offset = _SAME_PADDING_CROP_OFFSET if same_padding else _CROP_OFFSET

        layers: list[nn.Module] = []
        in_ch = 3
        for v in _VGG16_CFG:
            if v == "M":
                # ceil_mode: odd sizes keep their last row/column, as in caffe's pooling.
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            else:
                out_ch = max(1, round(v * width))
                padding = 1 if layers or same_padding else 100
                layers.append(nn.Conv2d(in_ch, out_ch, 3, padding=padding))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out_ch))
                layers.append(nn.ReLU(inplace=True))
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        # nn.Dropout, not Dropout2d: caffe's dropout layer drops single activations.
        self.classifier = nn.Sequential(
            nn.Conv2d(in_ch, fc_channels, 7, padding=3 if same_padding else 0),  # fc6
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1),  # fc7
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.upscore = nn.ConvTranspose2d(
            num_classes, num_classes, _UPSCORE_KERNEL, stride=_UPSCORE_STRIDE, bias=False
        )
        self._init_weights(backbone=path is None)
        if not learnable_upsampling:
            # Swap the parameter for a buffer of the same name: ConvTranspose2d.forward
            # reads self.weight either way, and the state-dict key does not change.
            weight = self.upscore.weight.detach()
            del self.upscore.weight
            self.upscore.register_buffer("weight", weight)

        if path is not None:
            self.load_vgg16_weights(path)

    def _init_weights(self, backbone: bool) -> None:
        # backbone=False when VGG-16 weights will overwrite it: He-init of 134M values
        # costs about a second on a CPU for nothing.
        if backbone:
            for m in (*self.features, *self.classifier):
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.score_fr.weight)
        nn.init.zeros_(self.score_fr.bias)
        with torch.no_grad():
            self.upscore.weight.copy_(_bilinear_kernel(self.num_classes, _UPSCORE_KERNEL))

    @torch.no_grad()
    def load_vgg16_weights(self, path: str | os.PathLike) -> None:
        """Load torchvision's ImageNet VGG-16 weights into ``features``, fc6 and fc7.

        The 13 convs copy over key for key. fc6 and fc7 are "convolutionalized"
        (Long et al. 2015, Sec. 3.1): the Linear weights ``classifier.0.weight``
        ``[4096, 25088]`` and ``classifier.3.weight`` ``[4096, 4096]`` are reshaped to
        ``[4096, 512, 7, 7]`` and ``[4096, 4096, 1, 1]``. torchvision flattens pool5 in
        (C, H, W) order, so the reshape is exact: on a 7×7 pool5 map fc6 computes the
        Linear layer's output. The 1000-class layer (``classifier.6``) is dropped;
        ``score_fr`` keeps its zero init. Never downloads.

        Args:
            path: a ``torch.save``-d state dict with torchvision's ``vgg16`` keys.

        Raises:
            FileNotFoundError: ``path`` does not exist (the message says how to get it).
            KeyError: the file lacks keys this network needs.
            ValueError: a tensor's shape does not match (e.g. ``width != 1``).
        """
        path = Path(path)
        _check_weights_file(path)
        # mmap: tensors are read from the page cache as they are copied, so loading does
        # not hold a second 550 MB copy in memory.
        source = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        targets: dict[str, Tensor] = {}
        for name, param in self.named_parameters():
            if name.startswith(("features.", "classifier.")):
                targets[name] = param
        missing = sorted(set(targets) - set(source))
        if missing:
            raise KeyError(f"{path} is not a torchvision VGG-16 state dict: missing {missing}")
        for name, param in targets.items():
            value = source[name]
            expected = param.shape
            if name.startswith("classifier.") and param.dim() == 4:
                expected = torch.Size((param.shape[0], param[0].numel()))  # the Linear's
            if value.shape != expected:
                raise ValueError(
                    f"{path}: {name} has shape {tuple(value.shape)}, this FCN32s needs "
                    f"{tuple(expected)}"
                )
            # reshape is the identity for the conv weights and convolutionalizes fc6/fc7.
            param.copy_(value.reshape(param.shape))

    def forward(self, x: Tensor) -> Tensor:
        """Score every pixel.

        Args:
            x: images ``[B, 3, H, W]``.

        Returns:
            Class scores ``[B, num_classes, H, W]`` (logits).
        """
        h, w = x.shape[-2:]
        score = self.upscore(self.score_fr(self.classifier(self.features(x))))
        top = self.crop_offset
        return score[:, :, top : top + h, top : top + w]
