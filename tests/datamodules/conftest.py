"""Fixtures: the embedded datasets generated once per session into a temporary folder,
and small copies of their layouts that tests may break."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from datamodules.embedded import EMBEDDED, is_complete
from datamodules.embedded.store import ENV_VAR


@pytest.fixture(scope="session")
def embedded_root(embedded_data_root: Path) -> Path:
    """The session's embedded-data root (tests/conftest.py generates the three datasets)."""
    for spec in EMBEDDED.values():
        assert is_complete(embedded_data_root / spec.name, spec)
    return embedded_data_root


@pytest.fixture(autouse=True)
def _embedded_env(embedded_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``data_dir=None`` at the session's embedded root (never the repo's data/)."""
    monkeypatch.setenv(ENV_VAR, str(embedded_root))
    return embedded_root


def _copy(files: list[Path], src_root: Path, dst_root: Path) -> None:
    for file in files:
        target = dst_root / file.relative_to(src_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)


@pytest.fixture
def imagenet_copy(embedded_root: Path, tmp_path: Path) -> Path:
    """3 classes x (4 train + 2 val) images in ImageFolder layout."""
    src = embedded_root / "imagenet"
    dst = tmp_path / "imagenet"
    wnids = sorted(os.listdir(src / "train"))[:3]
    files = []
    for wnid in wnids:
        files += sorted((src / "train" / wnid).iterdir())[:4] + sorted((src / "val" / wnid).iterdir())[:2]
    _copy(files, src, dst)
    return dst


@pytest.fixture
def voc_copy(embedded_root: Path, tmp_path: Path) -> Path:
    """VOCdevkit/VOC2012 with 4 train and 2 val ids."""
    src = embedded_root / "voc"
    dst = tmp_path / "voc"
    voc = Path("VOCdevkit/VOC2012")
    lists = {s: (src / voc / "ImageSets/Segmentation" / f"{s}.txt").read_text().split() for s in ("train", "val")}
    keep = {"train": lists["train"][:4], "val": lists["val"][:2]}
    files = []
    for ids in keep.values():
        for i in ids:
            files += [src / voc / "JPEGImages" / f"{i}.jpg", src / voc / "SegmentationClass" / f"{i}.png"]
    _copy(files, src, dst)
    (dst / voc / "ImageSets/Segmentation").mkdir(parents=True)
    for split, ids in keep.items():
        (dst / voc / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return dst


@pytest.fixture
def div2k_copy(embedded_root: Path, tmp_path: Path) -> Path:
    """DIV2K layout with 2 train and 1 val images, LR at x2 and x4."""
    src = embedded_root / "div2k"
    dst = tmp_path / "div2k"
    files = []
    for split, stems in (("train", ("0001", "0002")), ("valid", ("0801",))):
        for stem in stems:
            files.append(src / f"DIV2K_{split}_HR" / f"{stem}.png")
            for s in (2, 4):
                files.append(src / f"DIV2K_{split}_LR_bicubic" / f"X{s}" / f"{stem}x{s}.png")
    _copy(files, src, dst)
    return dst


@pytest.fixture
def corrupt():
    """Function that truncates a file to a third of its size (an interrupted download)."""

    def truncate(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])

    return truncate
