"""DIV2KDataModule on the embedded dataset and on broken copies of its layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import (
    CorruptImageError,
    CorruptImageWarning,
    DatasetLayoutError,
    DIV2KDataModule,
    ImagePairError,
    MissingLRWarning,
)
from datamodules.datasets import bicubic_downscale, load_pair

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SMALL = dict(num_workers=0, batch_size=4, repeat=2)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_embedded_layout(embedded_root: Path):
    root = embedded_root / "div2k"
    train = sorted(p.name for p in (root / "DIV2K_train_HR").iterdir())
    val = sorted(p.name for p in (root / "DIV2K_valid_HR").iterdir())
    assert train == [f"{i:04d}.png" for i in range(1, 25)] and val == [f"{i:04d}.png" for i in range(801, 809)]
    for split, stem in (("train", "0001"), ("valid", "0805")):
        width, height = Image.open(root / f"DIV2K_{split}_HR" / f"{stem}.png").size
        assert width % 12 == 0 and height % 12 == 0
        for s in (2, 3, 4):
            lr = Image.open(root / f"DIV2K_{split}_LR_bicubic" / f"X{s}" / f"{stem}x{s}.png")
            assert lr.size == (width // s, height // s)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_batches_every_scale(scale: int):
    dm = DIV2KDataModule(scale=scale, patch_size=12 * scale, **SMALL)
    assert dm.scale == scale and dm.task == "super_resolution"
    dm.setup("fit")
    assert len(dm.train_dataset) == 48 and len(dm.val_dataset) == 8
    lr, hr = next(iter(dm.train_dataloader()))
    assert lr.shape == (4, 3, 12, 12) and hr.shape == (4, 3, 12 * scale, 12 * scale)
    assert lr.dtype == hr.dtype == torch.float32
    assert 0 <= lr.min() and lr.max() <= 1 and 0 <= hr.min() and hr.max() <= 1
    lr, hr = next(iter(dm.val_dataloader()))  # full images, batch 1
    assert lr.shape[0] == 1 and hr.shape[-2:] == (lr.shape[-2] * scale, lr.shape[-1] * scale)


@pytest.mark.parametrize("backend", ["albumentations", "torchvision"])
def test_train_patches_are_aligned(backend: str):
    """Downscaling each HR patch reproduces its LR patch: crop, flips and rotations agree."""
    dm = DIV2KDataModule(scale=4, patch_size=48, backend=backend, num_workers=0, batch_size=16, repeat=4)
    dm.setup("fit")
    lr, hr = next(iter(dm.train_dataloader()))
    for lr_patch, hr_patch in zip(lr, hr):
        down = bicubic_downscale((hr_patch * 255).round().to(torch.uint8), 4).float() / 255
        # Interior only: bicubic support reaches 2 LR pixels across the patch border.
        assert _psnr(down[:, 2:-2, 2:-2], lr_patch[:, 2:-2, 2:-2]) > 30
        assert _psnr(down[:, 2:-2, 2:-2], lr_patch.flip(-1)[:, 2:-2, 2:-2]) < _psnr(down[:, 2:-2, 2:-2], lr_patch[:, 2:-2, 2:-2])


def test_center_crop_validation_batches():
    dm = DIV2KDataModule(val_mode="center_crop", val_crop_size=120, val_batch_size=4, **SMALL)
    dm.setup("validate")
    lr, hr = next(iter(dm.val_dataloader()))
    assert lr.shape == (4, 3, 30, 30) and hr.shape == (4, 3, 120, 120)


def test_full_validation_needs_batch_one():
    with pytest.raises(ValueError, match="val_batch_size"):
        DIV2KDataModule(val_batch_size=2)
    with pytest.raises(ValueError, match="patch_size"):
        DIV2KDataModule(scale=3, patch_size=96 + 1)


def test_probe_patches_are_fixed():
    dm = DIV2KDataModule(scale=4, patch_size=48, **SMALL)
    lr, hr = next(iter(dm.probe_dataloader(30, 30)))
    assert lr.shape == (30, 3, 12, 12) and hr.shape == (30, 3, 48, 48)
    again = next(iter(dm.probe_dataloader(30, 30)))
    assert torch.equal(lr, again[0]) and torch.equal(hr, again[1])
    with pytest.raises(ValueError, match="48"):
        dm.probe_dataloader(49, 8)  # 24 images x repeat 2


def test_missing_lr_folder_falls_back_to_bicubic(div2k_copy: Path, embedded_root: Path):
    shutil.rmtree(div2k_copy / "DIV2K_train_LR_bicubic" / "X4")
    dm = DIV2KDataModule(str(div2k_copy), scale=4, patch_size=96, **SMALL)
    with pytest.warns(MissingLRWarning, match="X4"):
        dm.setup("fit")
    assert all(lr is None for _, lr in dm.train_dataset.samples)
    lr, hr = dm.train_dataset[0]
    assert lr.shape == (3, 24, 24) and hr.shape == (3, 96, 96)
    # The embedded LR files were made the same way, so the fallback reproduces them exactly.
    made, _ = load_pair(dm.train_dataset.samples[0][0], None, 4)
    official = np.array(Image.open(embedded_root / "div2k" / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png"))
    assert torch.equal(made, torch.from_numpy(official).permute(2, 0, 1))


def test_missing_hr_folder(div2k_copy: Path):
    shutil.rmtree(div2k_copy / "DIV2K_valid_HR")
    dm = DIV2KDataModule(str(div2k_copy), **SMALL)
    with pytest.raises(DatasetLayoutError, match="DIV2K_valid_HR"):
        dm.prepare_data()


def test_missing_lr_file(div2k_copy: Path):
    missing = div2k_copy / "DIV2K_train_LR_bicubic" / "X2" / "0002x2.png"
    missing.unlink()
    dm = DIV2KDataModule(str(div2k_copy), scale=2, **SMALL)
    with pytest.raises(DatasetLayoutError, match=str(missing)):
        dm.setup("fit")


def test_lr_of_the_wrong_scale(div2k_copy: Path):
    wrong = div2k_copy / "DIV2K_train_LR_bicubic" / "X4" / "0001x4.png"
    shutil.copy(div2k_copy / "DIV2K_train_LR_bicubic" / "X2" / "0001x2.png", wrong)
    dm = DIV2KDataModule(str(div2k_copy), scale=4, **SMALL)
    with pytest.raises(ImagePairError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(wrong) in message and "0001.png" in message and "scale 4" in message


def test_corrupt_hr_and_skip(div2k_copy: Path, corrupt):
    bad = div2k_copy / "DIV2K_train_HR" / "0002.png"
    bad.write_bytes(b"\x89PNG not really")
    dm = DIV2KDataModule(str(div2k_copy), **SMALL)
    with pytest.raises(CorruptImageError, match=str(bad)):
        dm.setup("fit")
    dm = DIV2KDataModule(str(div2k_copy), **SMALL, skip_corrupt=True)
    with pytest.warns(CorruptImageWarning, match="0002.png"):
        dm.setup("fit")
    assert len(dm.train_dataset) == 1 * 2  # one pair left, repeat 2


def test_truncated_lr_pixels_raise_at_load(div2k_copy: Path, corrupt):
    bad = div2k_copy / "DIV2K_valid_LR_bicubic" / "X4" / "0801x4.png"
    corrupt(bad)  # the header survives, so setup passes; decoding fails
    dm = DIV2KDataModule(str(div2k_copy), **SMALL)
    dm.setup("validate")
    with pytest.raises(CorruptImageError, match=str(bad)):
        dm.val_dataset[0]


def _spectral_slope(gray: torch.Tensor) -> float:
    """Log-log slope of the radially averaged power spectrum (natural images: about -2)."""
    h, w = gray.shape
    window = torch.hann_window(h)[:, None] * torch.hann_window(w)[None]
    power = torch.fft.fftshift(torch.fft.fft2((gray - gray.mean()) * window).abs() ** 2)
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = ((yy / h) ** 2 + (xx / w) ** 2).sqrt()
    edges = np.geomspace(0.02, 0.45, 12)
    freqs = np.sqrt(edges[:-1] * edges[1:])
    means = [float(power[(radius >= a) & (radius < b)].mean()) for a, b in zip(edges[:-1], edges[1:])]
    return float(np.polyfit(np.log(freqs), np.log(means), 1)[0])


def test_natural_image_statistics(embedded_root: Path):
    """HR images are neither flat nor noise: bicubic x4 PSNR in the range of real photos,
    and power spectra falling like 1/f^2 (white noise: slope 0; blur: much steeper)."""
    root = embedded_root / "div2k"
    psnrs = []
    for stem in ("0801", "0802", "0803", "0804", "0805", "0806", "0807", "0808"):
        hr = torch.from_numpy(np.array(Image.open(root / "DIV2K_valid_HR" / f"{stem}.png"))).permute(2, 0, 1).float() / 255
        lr = torch.from_numpy(np.array(Image.open(root / "DIV2K_valid_LR_bicubic" / "X4" / f"{stem}x4.png"))).permute(2, 0, 1).float() / 255
        up = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="bicubic", align_corners=False)[0].clamp(0, 1)
        psnrs.append(_psnr(up[:, 4:-4, 4:-4], hr[:, 4:-4, 4:-4]))
        # Real photographs: about -2 (1/f^2 power), down to -3.6 for the crops with much
        # smooth sky (the rocket launch); white noise is near 0 (checked below).
        assert -4.0 < _spectral_slope(hr.mean(0)) < -1.5, stem
    assert 18 < np.mean(psnrs) < 32, psnrs  # DIV2K x4 bicubic: about 26-29 dB
    assert _spectral_slope(torch.rand(240, 240)) > -0.5  # the check does tell noise apart


def test_decoded_cache(div2k_copy: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    plain = DIV2KDataModule(str(div2k_copy), **SMALL)
    cached = DIV2KDataModule(str(div2k_copy), **SMALL, cache_dir=str(cache))
    plain.setup("validate")
    cached.setup("validate")
    first = cached.val_dataset[0]
    assert sorted(p.name.split("-")[0] for p in cache.iterdir()) == ["0801", "0801x4"]
    for a, b in zip(plain.val_dataset[0], first):
        assert torch.equal(a, b)
    for a, b in zip(cached.val_dataset[0], first):  # now served from the memory map
        assert torch.equal(a, b)
    # A replaced source file gets a new cache entry instead of the stale one.
    hr = div2k_copy / "DIV2K_valid_HR" / "0801.png"
    Image.open(hr).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(hr)
    os.utime(hr, ns=(hr.stat().st_atime_ns, hr.stat().st_mtime_ns + 10**9))
    lr = div2k_copy / "DIV2K_valid_LR_bicubic" / "X4" / "0801x4.png"
    Image.open(lr).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(lr)
    os.utime(lr, ns=(lr.stat().st_atime_ns, lr.stat().st_mtime_ns + 10**9))
    flipped = cached.val_dataset[0]
    assert torch.equal(flipped[1], first[1].flip(-1)) and len(list(cache.iterdir())) == 4


def test_image_smaller_than_the_patch(div2k_copy: Path):
    dm = DIV2KDataModule(str(div2k_copy), patch_size=244, **SMALL)  # embedded HR sides are 192-240
    with pytest.raises(ValueError, match="smaller than the 244x244 HR crop") as info:
        dm.setup("fit")
    assert "DIV2K_train_HR" in str(info.value)
