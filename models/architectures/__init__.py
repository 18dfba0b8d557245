"""The networks the tasks train: plain ``nn.Module``s, no Lightning.

- :func:`resnet18` — classification (He et al. 2016), torchvision's network.
- :class:`FCN32s` — semantic segmentation (Long et al. 2015), VGG-16 backbone.
- :class:`SRResNet` — super-resolution (Ledig et al. 2017).
- :class:`GPT` — byte-level language modelling (a GPT-2-style decoder, Radford et al. 2019).

:func:`build_architecture` builds one by name, for configs::

    net = build_architecture("fcn32s", num_classes=21, width=0.25, fc_channels=512)

Unknown names and unknown keywords raise, listing what is valid.
"""

from __future__ import annotations

import inspect
from types import MappingProxyType
from typing import Any, Callable

from torch import nn

from .fcn import FCN32s, default_vgg16_weights_path
from .gpt import GPT
from .resnet import resnet18
from .srresnet import SRResNet

__all__ = [
    "ARCHITECTURES",
    "FCN32s",
    "GPT",
    "SRResNet",
    "build_architecture",
    "default_vgg16_weights_path",
    "resnet18",
]

#: name -> builder (a class or a function whose keywords are the network's options).
ARCHITECTURES: MappingProxyType[str, Callable[..., nn.Module]] = MappingProxyType(
    {"resnet18": resnet18, "fcn32s": FCN32s, "srresnet": SRResNet, "gpt": GPT}
)


def build_architecture(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered network by name.

    Args:
        name: one of ``ARCHITECTURES`` (``"resnet18"``, ``"fcn32s"``, ``"srresnet"``, ``"gpt"``).
        **kwargs: the builder's keyword arguments (e.g. ``num_classes``, ``scale``).

    Returns:
        The network, freshly initialised.

    Raises:
        ValueError: unknown ``name`` or an unknown keyword (the message lists the valid
            ones), or whatever the builder raises for a bad value.
    """
    try:
        builder = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"Unknown architecture: {name!r} (valid: {', '.join(sorted(ARCHITECTURES))})"
        ) from None
    # Checked here rather than left to a TypeError so the message names the valid keywords.
    valid = [p for p in inspect.signature(builder).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(
            f"Unknown keyword(s) for architecture {name!r}: {', '.join(unknown)} "
            f"(valid: {', '.join(valid)})"
        )
    return builder(**kwargs)
