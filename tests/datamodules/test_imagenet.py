"""ImageNetDataModule on the embedded dataset and on broken copies of its layout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import CorruptImageError, CorruptImageWarning, DatasetLayoutError, ImageNetDataModule
from datamodules.embedded.imagenet import CLASS_WNIDS
from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SMALL = dict(train_crop_size=48, val_resize_size=56, val_crop_size=48, num_workers=0, batch_size=8)


def _batch(loader):
    return next(iter(loader))


def test_embedded_batches_shapes_dtypes_ranges():
    dm = ImageNetDataModule(**SMALL)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.classes == list(CLASS_WNIDS) and dm.task == "classification"
    assert len(dm.train_dataset) == 1000 and len(dm.val_dataset) == 250
    for loader, size in ((dm.train_dataloader(), 48), (dm.val_dataloader(), 48)):
        images, targets = _batch(loader)
        assert images.shape == (8, 3, size, size) and images.dtype == torch.float32
        assert targets.shape == (8,) and targets.dtype == torch.int64
        assert 0 <= targets.min() and targets.max() < 10
        # Normalised pixels lie in [(0 - mean) / std, (1 - mean) / std].
        low = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        high = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        assert low - 1e-4 <= images.min() and images.max() <= high + 1e-4
        assert images.std() > 0.3  # real content, not a constant


def test_setup_is_idempotent():
    dm = ImageNetDataModule(**SMALL)
    dm.setup("fit")
    train, val = dm.train_dataset, dm.val_dataset
    dm.setup("fit")
    dm.setup("validate")
    assert dm.train_dataset is train and dm.val_dataset is val


@pytest.mark.parametrize("backend", ["albumentations", "torchvision"])
def test_val_modes(backend, embedded_root: Path):
    path = sorted((embedded_root / "imagenet" / "val" / CLASS_WNIDS[0]).iterdir())[0]
    width, height = Image.open(path).size
    for mode in ("resize_crop", "resize"):
        dm = ImageNetDataModule(**{**SMALL, "val_mode": mode, "backend": backend})
        dm.setup("validate")
        image, _ = dm.val_dataset[0]
        assert image.shape == (3, 48, 48)
    # "resize" keeps the whole field of view: it equals a plain resize of the full image.
    full = torch.from_numpy(np.array(Image.open(path).convert("RGB").resize((48, 48), Image.BILINEAR))).float()
    full = (full.permute(2, 0, 1) / 255 - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    assert width != height  # so the two modes really differ
    assert (image - full).abs().mean() < 0.1


def test_first_n_classes_in_sorted_order():
    dm = ImageNetDataModule(**SMALL, num_classes=3)
    dm.setup("fit")
    assert dm.classes == sorted(CLASS_WNIDS)[:3]
    assert len(dm.train_dataset) == 300 and len(dm.val_dataset) == 75
    assert {label for _, label in dm.train_dataset.samples} == {0, 1, 2}


def test_class_list_file(tmp_path: Path):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"# my subset\n{CLASS_WNIDS[4]} goldfish\n\n{CLASS_WNIDS[1]}\n")
    dm = ImageNetDataModule(**SMALL, class_list=str(listing))
    assert dm.num_classes == 2
    dm.setup("fit")
    assert dm.classes == [CLASS_WNIDS[1], CLASS_WNIDS[4]]
    paths = {label: os.path.basename(os.path.dirname(p)) for p, label in dm.val_dataset.samples}
    assert paths == {0: CLASS_WNIDS[1], 1: CLASS_WNIDS[4]}
    with pytest.raises(ValueError, match="num_classes"):
        ImageNetDataModule(**SMALL, class_list=str(listing), num_classes=5)


def test_class_list_naming_absent_classes(tmp_path: Path):
    listing = tmp_path / "classes.txt"
    listing.write_text(f"{CLASS_WNIDS[0]}\nn99999999\n")
    dm = ImageNetDataModule(**SMALL, class_list=str(listing))
    with pytest.raises(DatasetLayoutError, match="n99999999") as info:
        dm.setup("fit")
    assert str(listing) in str(info.value) and "train" in str(info.value)


def test_missing_class_list_file(tmp_path: Path):
    with pytest.raises(DatasetLayoutError, match="nope.txt"):
        ImageNetDataModule(**SMALL, class_list=str(tmp_path / "nope.txt"))


def test_too_many_classes():
    with pytest.raises(ValueError, match="embedded dataset"):
        ImageNetDataModule(num_classes=100)


def test_missing_root(tmp_path: Path):
    missing = tmp_path / "no_such_imagenet"
    dm = ImageNetDataModule(str(missing), **SMALL)
    with pytest.raises(DatasetLayoutError) as info:
        dm.prepare_data()
    assert str(missing) in str(info.value) and "<wnid>" in str(info.value)


def test_missing_split(imagenet_copy: Path):
    shutil.rmtree(imagenet_copy / "val")
    dm = ImageNetDataModule(str(imagenet_copy), **SMALL, num_classes=3)
    with pytest.raises(DatasetLayoutError, match=str(imagenet_copy / "val")):
        dm.setup("fit")


def test_missing_class_folder_in_val(imagenet_copy: Path):
    shutil.rmtree(imagenet_copy / "val" / CLASS_WNIDS[2])
    dm = ImageNetDataModule(str(imagenet_copy), **SMALL, num_classes=3)
    with pytest.raises(DatasetLayoutError, match=str(imagenet_copy / "val" / CLASS_WNIDS[2])):
        dm.setup("fit")


def test_empty_class_folder(imagenet_copy: Path):
    folder = imagenet_copy / "train" / CLASS_WNIDS[1]
    for file in folder.iterdir():
        file.unlink()
    (folder / "notes.txt").write_text("not an image")
    dm = ImageNetDataModule(str(imagenet_copy), **SMALL, num_classes=3)
    with pytest.raises(DatasetLayoutError, match="no images") as info:
        dm.setup("fit")
    assert str(folder) in str(info.value)


def test_fewer_classes_than_asked(imagenet_copy: Path):
    dm = ImageNetDataModule(str(imagenet_copy), **SMALL, num_classes=5)
    with pytest.raises(DatasetLayoutError, match="num_classes=5"):
        dm.setup("fit")


def test_real_dataset_default_is_imagenet_100(imagenet_copy: Path):
    assert ImageNetDataModule(str(imagenet_copy)).num_classes == 100


def test_corrupt_image_raises_naming_the_file(imagenet_copy: Path, corrupt):
    dm = ImageNetDataModule(str(imagenet_copy), **SMALL, num_classes=3)
    dm.setup("fit")
    bad = Path(dm.val_dataset.samples[1][0])
    corrupt(bad)
    dm.val_dataset[0]
    with pytest.raises(CorruptImageError, match=str(bad)):
        dm.val_dataset[1]


def test_skip_corrupt_warns_with_count_and_keeps_batch_size(imagenet_copy: Path, corrupt):
    dm = ImageNetDataModule(str(imagenet_copy), **{**SMALL, "batch_size": 4}, num_classes=3, skip_corrupt=True)
    dm.setup("fit")
    bad = [Path(dm.val_dataset.samples[i][0]) for i in (0, 3)]
    for path in bad:
        corrupt(path)
    (bad[1].parent / "garbage.JPEG").write_bytes(b"definitely not a jpeg")
    dm = ImageNetDataModule(str(imagenet_copy), **{**SMALL, "batch_size": 4}, num_classes=3, skip_corrupt=True)
    dm.setup("fit")
    with pytest.warns(CorruptImageWarning) as record:
        batches = list(dm.val_dataloader())
    assert sum(len(b[1]) for b in batches) == len(dm.val_dataset) == 7
    messages = [str(w.message) for w in record if issubclass(w.category, CorruptImageWarning)]
    assert len(messages) == 3 and "3 skipped so far" in messages[-1]
    assert any(str(bad[0]) in m for m in messages)


@pytest.mark.parametrize("backend", ["albumentations", "torchvision"])
def test_same_seed_same_batches_with_workers(backend):
    def first_batch(seed: int):
        dm = ImageNetDataModule(**{**SMALL, "num_workers": 1, "persistent_workers": False}, seed=seed, backend=backend)
        dm.setup("fit")
        torch.manual_seed(123)  # torchvision draws from torch's RNG in the main process too
        return _batch(dm.train_dataloader())

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_probe_dataloader_fixed_subset():
    dm = ImageNetDataModule(**SMALL)
    full = list(dm.probe_dataloader(24, 24))
    again = list(dm.probe_dataloader(24, 24))
    assert len(full) == 1 and torch.equal(full[0][0], again[0][0])
    assert full[0][0].shape == (24, 3, 48, 48)
    shuffled = torch.cat([x for x, _ in dm.probe_dataloader(24, 5, shuffle=True, seed=3)])
    assert shuffled.shape == full[0][0].shape and not torch.equal(shuffled, full[0][0])
    # Same samples, other order: compare the sorted per-sample sums.
    assert torch.allclose(shuffled.sum((1, 2, 3)).sort().values, full[0][0].sum((1, 2, 3)).sort().values, atol=1e-3)
    with pytest.raises(ValueError, match="1000"):
        dm.probe_dataloader(1001, 8)


def test_learnable_structure(embedded_root: Path):
    """Hue histograms alone classify far above chance (10%); shapes/textures carry the rest."""

    def features(split: str):
        x, y = [], []
        for label, wnid in enumerate(CLASS_WNIDS):
            for path in sorted((embedded_root / "imagenet" / split / wnid).iterdir())[:40]:
                hsv = np.asarray(Image.open(path).convert("HSV").resize((16, 16)), np.float32) / 255
                saturated = hsv[..., 1] > 0.45
                hist = np.histogram(hsv[..., 0][saturated], bins=20, range=(0, 1))[0]
                x.append(hist / max(hist.sum(), 1))
                y.append(label)
        return np.stack(x), np.array(y)

    x_train, y_train = features("train")
    x_val, y_val = features("val")
    centroids = np.stack([x_train[y_train == c].mean(0) for c in range(10)])
    predicted = np.argmin(((x_val[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == y_val).mean() > 0.25
