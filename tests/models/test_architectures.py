"""The networks: output shapes, the papers' parameter counts, FCN's bilinear upsampling
and its pretrained VGG-16 loading (through a fake weights file: nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from models.architectures import (
    GPT,
    ARCHITECTURES,
    FCN32s,
    SRResNet,
    build_architecture,
    default_vgg16_weights_path,
    resnet18,
)

# Small FCN for tests about shapes and upsampling: same geometry, ~1/500 of the compute.
TINY_FCN = dict(width=0.125, fc_channels=64)
VGG16_FILENAME = os.path.basename(torchvision.models.VGG16_Weights.IMAGENET1K_V1.url)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- ResNet-18


@pytest.mark.parametrize("num_classes", [10, 100])
def test_resnet18_logits_shape(num_classes):
    net = resnet18(num_classes=num_classes).eval()
    assert net(torch.randn(2, 3, 64, 64)).shape == (2, num_classes)


@pytest.mark.parametrize(
    "num_classes, expected",
    # torchvision's documented 11,689,512 at 1000 classes; each class costs 512 + 1.
    [(1000, 11_689_512), (100, 11_227_812), (10, 11_181_642)],
)
def test_resnet18_parameter_count(num_classes, expected):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        assert n_params(resnet18(num_classes)) == expected


def test_resnet18_zero_init_residual_zeroes_last_bn_of_each_block():
    net = resnet18(10, zero_init_residual=True)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    assert len(blocks) == 8
    assert all(torch.all(b.bn2.weight == 0) for b in blocks)
    assert torch.all(resnet18(10).layer1[0].bn2.weight == 1)


def test_resnet18_rejects_no_classes():
    with pytest.raises(ValueError, match="num_classes: 0"):
        resnet18(0)


# --------------------------------------------------------------------------- FCN-32s


@pytest.fixture(scope="module", params=[{}, {"same_padding": True, "batch_norm": True}], ids=["paper", "same_padding_bn"])
def tiny_fcn(request):
    return FCN32s(**TINY_FCN, **request.param).eval()


@pytest.mark.parametrize(
    "h, w",
    # tiny, odd, non-multiples of 32, a multiple of 32, and VOC-like 500×375 (odd).
    [(1, 1), (17, 31), (31, 33), (64, 64), (97, 45), (100, 131), (224, 224), (500, 375)],
)
def test_fcn_output_is_input_sized(tiny_fcn, h, w):
    with torch.no_grad():
        out = tiny_fcn(torch.randn(2, 3, h, w))
    assert out.shape == (2, 21, h, w)


def coord_map(net: FCN32s) -> tuple[float, float]:
    """``(offset, scale)`` with input x = scale * u + offset for upscore's output pixel u.

    Composed layer by layer as caffe's ``coord_map`` does: a conv or pool maps its output
    o to the input s*o - p + (k-1)/2; the transposed conv maps output u back to its input
    (u - (k-1)/2 + p) / s.
    """
    first = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
    scale, offset = 1.0, 0.0
    for m in [*net.features, *net.classifier, net.score_fr]:
        if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d)):
            k, s, p = first(m.kernel_size), first(m.stride), first(m.padding)
            scale, offset = scale * s, offset + scale * ((k - 1) / 2 - p)
    k, s, p = net.upscore.kernel_size[0], net.upscore.stride[0], net.upscore.padding[0]
    return offset + scale * (p - (k - 1) / 2) / s, scale / s


@pytest.mark.parametrize("same_padding, expected", [(False, 19), (True, 16)])
def test_fcn_crop_aligns_output_with_input(same_padding, expected):
    net = FCN32s(**TINY_FCN, same_padding=same_padding).eval()
    torch.nn.init.normal_(net.score_fr.weight)  # zero-initialised, it would hide any crop
    offset, scale = coord_map(net)
    assert scale == 1.0  # upscore undoes the 32x downsampling
    crop = int(-offset)  # upscore pixel u sits on input pixel u + offset
    assert crop == -offset == expected == net.crop_offset
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        full = net.upscore(net.score_fr(net.classifier(net.features(x))))
        assert full.abs().amax() > 0
        torch.testing.assert_close(net(x), full[..., crop : crop + 45, crop : crop + 70])


def test_fcn_batch_norm_follows_every_vgg_conv():
    net = FCN32s(**TINY_FCN, batch_norm=True)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds.count("BatchNorm2d") == kinds.count("Conv2d") == 13
    assert all(kinds[i + 1] == "BatchNorm2d" for i, k in enumerate(kinds) if k == "Conv2d")


def test_fcn_num_classes_and_width_change_shapes():
    net = FCN32s(num_classes=5, width=0.25, fc_channels=32).eval()
    assert net.features[0].out_channels == 16 and net.features[28].out_channels == 128
    assert net.classifier[0].kernel_size == (7, 7) and net.classifier[3].in_channels == 32
    with torch.no_grad():
        assert net(torch.randn(1, 3, 41, 37)).shape == (1, 5, 41, 37)


def test_fcn_parameter_count_matches_paper():
    with torch.device("meta"):
        fixed = FCN32s()
        learnable = FCN32s(learnable_upsampling=True)
        vgg = torchvision.models.vgg16()
    # The backbone is exactly VGG-16's convs and fc6/fc7 exactly its first two Linear layers.
    assert n_params(fixed.features) == n_params(vgg.features) == 14_714_688
    fc67 = n_params(vgg.classifier[0]) + n_params(vgg.classifier[3])
    assert n_params(fixed.classifier) == fc67 == 102_764_544 + 16_781_312
    assert n_params(fixed.score_fr) == 4096 * 21 + 21
    # 134,346,581 trainable: the paper's "134M" (Table 1). The fixed bilinear upscore is a
    # buffer; learnable it adds 21 * 21 * 64 * 64.
    assert n_params(fixed) == 134_346_581
    assert n_params(learnable) == 134_346_581 + 21 * 21 * 64 * 64 == 136_152_917


def hand_bilinear(channels: int, k: int) -> np.ndarray:
    """Long et al.'s ``upsample_filt``, written out with numpy."""
    f = np.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f) * f  # = 31.5 for k = 64
    og = np.ogrid[:k, :k]
    filt = (1 - np.abs(og[0] - c) / f) * (1 - np.abs(og[1] - c) / f)
    w = np.zeros((channels, channels, k, k), dtype=np.float32)
    for i in range(channels):
        w[i, i] = filt
    return w


@pytest.mark.parametrize("learnable", [False, True])
def test_fcn_upscore_is_bilinear(learnable):
    net = FCN32s(num_classes=4, learnable_upsampling=learnable, **TINY_FCN)
    expected = torch.from_numpy(hand_bilinear(4, 64))
    assert net.upscore.weight.shape == (4, 4, 64, 64)
    torch.testing.assert_close(net.upscore.weight.detach(), expected, rtol=0, atol=1e-7)
    # Bilinear means a partition of unity: away from the border a constant map stays constant.
    up = net.upscore(torch.ones(1, 4, 3, 3)).detach()
    torch.testing.assert_close(up[..., 32:96, 32:96], torch.ones(1, 4, 64, 64))


def test_fcn_upscore_fixed_by_default_learnable_on_request():
    fixed = FCN32s(num_classes=3, **TINY_FCN)
    learnable = FCN32s(num_classes=3, learnable_upsampling=True, **TINY_FCN)
    assert "upscore.weight" in dict(fixed.named_buffers())
    assert "upscore.weight" not in dict(fixed.named_parameters())
    assert "upscore.weight" in dict(learnable.named_parameters())
    # Same key either way, so checkpoints load across the two modes.
    learnable.load_state_dict(fixed.state_dict())
    for net in (fixed, learnable):
        torch.nn.init.normal_(net.score_fr.weight)  # past the zero init, so upscore gets a signal
        F.cross_entropy(net(torch.randn(1, 3, 40, 40)), torch.randint(0, 3, (1, 40, 40))).backward()
    assert learnable.upscore.weight.grad.abs().sum() > 0
    assert fixed.upscore.weight.grad is None and not fixed.upscore.weight.requires_grad


def test_fcn_score_fr_zero_init_first_gradient_reaches_score_fr_only():
    net = FCN32s(num_classes=3, **TINY_FCN)
    assert torch.all(net.score_fr.weight == 0) and torch.all(net.score_fr.bias == 0)
    F.cross_entropy(net(torch.randn(2, 3, 40, 40)), torch.randint(0, 3, (2, 40, 40))).backward()
    assert net.score_fr.weight.grad.abs().sum() > 0
    assert torch.all(net.features[0].weight.grad == 0)


@pytest.fixture
def fake_vgg16_weights(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A torchvision-style VGG-16 state dict of random tensors (torchvision's keys/shapes)."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16().state_dict().items()}
    g = torch.Generator().manual_seed(0)
    # torch.rand: half the cost of randn at 138M values, and just as unlikely to collide.
    state = {k: torch.rand(s, generator=g) - 0.5 for k, s in shapes.items()}
    path = tmp_path / VGG16_FILENAME
    torch.save(state, path)
    return path, state


def test_fcn_loads_and_convolutionalizes_vgg16(fake_vgg16_weights):
    path, src = fake_vgg16_weights
    net = FCN32s(pretrained_backbone=True, weights_path=str(path))
    conv_keys = [k for k in src if k.startswith("features.")]
    assert len(conv_keys) == 26  # 13 convs, weight + bias
    for key in conv_keys:
        assert torch.equal(net.get_parameter(key), src[key]), key
    fc6, fc7 = net.classifier[0], net.classifier[3]
    assert torch.equal(fc6.weight, src["classifier.0.weight"].reshape(4096, 512, 7, 7))
    assert torch.equal(fc6.bias, src["classifier.0.bias"])
    assert torch.equal(fc7.weight, src["classifier.3.weight"].reshape(4096, 4096, 1, 1))
    assert torch.equal(fc7.bias, src["classifier.3.bias"])
    assert torch.all(net.score_fr.weight == 0)  # the 1000-class layer is not used
    # Convolutionalized fc6 on a 7×7 pool5 map computes torchvision's Linear layer.
    # float64: a 25,088-term sum in float32 differs by summation order alone.
    pool5 = torch.randn(2, 512, 7, 7, dtype=torch.float64)
    with torch.no_grad():
        out = F.conv2d(pool5, fc6.weight.double(), fc6.bias.double()).flatten(1)
        w, b = src["classifier.0.weight"].double(), src["classifier.0.bias"].double()
        torch.testing.assert_close(out, F.linear(pool5.flatten(1), w, b))


def test_fcn_missing_weights_names_default_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / VGG16_FILENAME
    assert default_vgg16_weights_path() == expected
    with pytest.raises(FileNotFoundError) as err:
        FCN32s(pretrained_backbone=True)
    message = str(err.value)
    assert str(expected) in message
    assert torchvision.models.VGG16_Weights.IMAGENET1K_V1.url in message
    assert "weights_path" in message


def test_fcn_missing_weights_names_given_path(tmp_path):
    missing = tmp_path / "nowhere" / "vgg16.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        FCN32s(pretrained_backbone=True, weights_path=str(missing))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(pretrained_backbone=True, width=0.5), "width=0.5"),
        (dict(pretrained_backbone=True, fc_channels=512), "fc_channels=512"),
        (dict(weights_path="vgg16.pth"), "pretrained_backbone=False"),
        (dict(num_classes=0), "num_classes: 0"),
        (dict(width=0.0), "width: 0.0"),
        (dict(fc_channels=0), "fc_channels: 0"),
        (dict(dropout=1.0), "dropout: 1.0"),
        (dict(pretrained_backbone=True, batch_norm=True), "batch_norm=False"),
    ],
)
def test_fcn_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FCN32s(**kwargs)


# --------------------------------------------------------------------------- SRResNet


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_srresnet_output_shape(scale):
    net = SRResNet(scale=scale).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, 7, 9))
    assert out.shape == (2, 3, 7 * scale, 9 * scale)


@pytest.mark.parametrize(
    "scale, expected",
    # 1,549,462 at ×4: the "1.5M" usually quoted. ×2 drops one 147,713-parameter stage;
    # ×3 has one stage with a 64 -> 576 conv (332,353) instead of two.
    [(4, 1_549_462), (2, 1_549_462 - 147_713), (3, 1_549_462 - 2 * 147_713 + 332_353)],
)
def test_srresnet_parameter_count(scale, expected):
    net = SRResNet(scale=scale)
    assert n_params(net) == expected
    blocks = [m for m in net.body if len(list(m.children())) > 0]
    assert len(blocks) == 16
    shuffles = [m.upscale_factor for m in net.modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert shuffles == {2: [2], 3: [3], 4: [2, 2]}[scale]


def test_srresnet_grayscale_and_small_config():
    net = SRResNet(scale=2, num_channels=1, num_features=8, num_blocks=2).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 1, 5, 6)).shape == (1, 1, 10, 12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(scale=5), "scale: 5"),
        (dict(scale=1), "scale: 1"),
        (dict(num_blocks=0), "num_blocks: 0"),
    ],
)
def test_srresnet_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRResNet(**kwargs)


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "name, kwargs, cls, attribute, value",
    [
        ("resnet18", dict(num_classes=7), torchvision.models.ResNet, "fc.out_features", 7),
        ("fcn32s", dict(num_classes=7, **TINY_FCN), FCN32s, "score_fr.out_channels", 7),
        ("srresnet", dict(scale=3, num_blocks=2), SRResNet, "upsample.0.1.upscale_factor", 3),
        ("gpt", dict(vocab_size=50, block_size=8, n_layer=1, n_head=2, d_model=16), GPT, "block_size", 8),
    ],
)
def test_build_architecture_passes_keywords(name, kwargs, cls, attribute, value):
    assert set(ARCHITECTURES) == {"resnet18", "fcn32s", "srresnet", "gpt"}
    net = build_architecture(name, **kwargs)
    assert isinstance(net, cls)
    obj = net
    for part in attribute.split("."):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    assert obj == value


def test_build_architecture_unknown_name_lists_valid():
    with pytest.raises(ValueError, match="'vgg16'.*fcn32s, gpt, resnet18, srresnet"):
        build_architecture("vgg16")


def test_build_architecture_unknown_keyword_lists_valid():
    with pytest.raises(ValueError, match="num_class .*valid: scale, num_channels"):
        build_architecture("srresnet", num_class=3)


def test_srresnet_bicubic_residual_starts_at_bicubic():
    net = SRResNet(scale=4, num_blocks=2, bicubic_residual=True)
    lr = torch.rand(2, 3, 9, 11)
    bicubic = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(net(lr), bicubic)
    # Still trainable: the zero-initialised last conv gets a gradient.
    net(lr).sub(1).pow(2).mean().backward()
    assert net.tail.weight.grad.abs().sum() > 0
