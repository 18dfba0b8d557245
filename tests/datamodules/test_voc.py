"""VOCDataModule on the embedded dataset and on broken copies of its layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules import CorruptImageError, CorruptImageWarning, DatasetLayoutError, ImagePairError, VOCDataModule
from datamodules.embedded.voc import voc_palette
from datamodules.voc import pad_collate

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")

SMALL = dict(crop_size=64, num_workers=0, batch_size=4)
VOC = Path("VOCdevkit/VOC2012")


def _ids(root: Path, split: str) -> list[str]:
    return (root / VOC / "ImageSets/Segmentation" / f"{split}.txt").read_text().split()


def test_embedded_layout_and_palette_masks(embedded_root: Path):
    root = embedded_root / "voc"
    train, val = _ids(root, "train"), _ids(root, "val")
    assert len(train) == 150 and len(val) == 40 and not set(train) & set(val)
    assert sorted(_ids(root, "trainval")) == sorted(train + val)
    seen: set[int] = set()
    for image_id in train[:60]:
        mask = Image.open(root / VOC / "SegmentationClass" / f"{image_id}.png")
        assert mask.mode == "P" and mask.getpalette()[: 3 * 256] == voc_palette()
        assert mask.size == Image.open(root / VOC / "JPEGImages" / f"{image_id}.jpg").size
        values = set(np.unique(np.array(mask)).tolist())
        assert values <= set(range(21)) | {255} and 255 in values  # the void band along edges
        seen |= values
    assert len(seen - {0, 255}) >= 15  # the object classes are all in use


def test_train_val_batches():
    dm = VOCDataModule(**SMALL)
    assert dm.num_classes == 21 and dm.ignore_index == 255 and dm.task == "segmentation"
    dm.setup("fit")
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (4, 64, 64) and masks.dtype == torch.int64
    assert set(masks.unique().tolist()) <= set(range(21)) | {255}
    image, mask = next(iter(dm.val_dataloader()))  # batch 1, full size
    sample_id = _ids_from(dm.val_dataset.samples[0][0])
    width, height = Image.open(dm.val_dataset.samples[0][0]).size
    assert image.shape == (1, 3, height, width) and mask.shape == (1, height, width), sample_id
    expected = torch.from_numpy(np.array(Image.open(dm.val_dataset.samples[0][1]))).long()
    assert torch.equal(mask[0], expected)  # indices, never palette colours


def _ids_from(path: str) -> str:
    return Path(path).stem


@pytest.mark.parametrize("backend", ["albumentations", "torchvision"])
def test_train_padding_is_255(backend):
    # A crop far larger than every image (~136 px max) forces padding on two sides.
    dm = VOCDataModule(crop_size=200, scale_range=(1.0, 1.0), num_workers=0, batch_size=2, backend=backend)
    dm.setup("fit")
    image, mask = dm.train_dataset[0]
    height, width = Image.open(dm.train_dataset.samples[0][0]).size[::-1]
    padded = mask == 255
    assert padded.sum() >= 200 * 200 - height * width
    # Whole padded rows/columns exist, and padded image pixels are the mean colour (0).
    assert bool(padded.all(dim=1).any()) and bool(padded.all(dim=0).any())
    rows = padded.all(dim=1)
    assert image[:, rows].abs().max() < 0.02


def test_val_batches_padded_with_255():
    dm = VOCDataModule(**SMALL, val_batch_size=3)
    dm.setup("validate")
    images, masks = next(iter(dm.val_dataloader()))
    sizes = [Image.open(p).size for p, _ in dm.val_dataset.samples[:3]]
    assert images.shape[-2:] == (max(h for _, h in sizes), max(w for w, _ in sizes))
    for i, (width, height) in enumerate(sizes):
        assert bool((masks[i, height:, :] == 255).all()) and bool((masks[i, :, width:] == 255).all())
        assert bool((masks[i, :height, :width] != 255).any())
        assert float(images[i, :, height:, :].abs().sum()) == 0.0


def test_pad_collate():
    batch = [(torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64)), (torch.ones(3, 4, 1), torch.ones(4, 1, dtype=torch.int64))]
    images, masks = pad_collate(batch, ignore_index=255)
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert masks[0, 2:].eq(255).all() and masks[1, :, 1:].eq(255).all() and masks[1, :, 0].eq(1).all()
    assert images[0, :, 2:].eq(0).all() and images[0, :, :2].eq(1).all()


def test_probe_center_crop_with_255_padding():
    dm = VOCDataModule(crop_size=160, num_workers=0)
    images, masks = next(iter(dm.probe_dataloader(6, 6)))
    assert images.shape == (6, 3, 160, 160) and masks.shape == (6, 160, 160)
    assert bool(masks[:, 0, :].eq(255).all())  # every image is smaller than 160: centred padding
    again = next(iter(dm.probe_dataloader(6, 6)))
    assert torch.equal(images, again[0]) and torch.equal(masks, again[1])


@pytest.mark.parametrize("level", ["VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_may_be_devkit_or_voc2012(voc_copy: Path, level: str):
    dm = VOCDataModule(str(voc_copy / level), **SMALL)
    dm.setup("fit")
    assert len(dm.train_dataset) == 4 and len(dm.val_dataset) == 2


def test_missing_root(tmp_path: Path):
    dm = VOCDataModule(str(tmp_path / "nothing"), **SMALL)
    with pytest.raises(DatasetLayoutError, match="nothing"):
        dm.prepare_data()


def test_not_a_voc_folder(tmp_path: Path):
    dm = VOCDataModule(str(tmp_path), **SMALL)
    with pytest.raises(DatasetLayoutError, match="JPEGImages") as info:
        dm.setup("fit")
    assert str(tmp_path) in str(info.value)


def test_missing_split_list(voc_copy: Path):
    (voc_copy / VOC / "ImageSets/Segmentation/val.txt").unlink()
    dm = VOCDataModule(str(voc_copy), **SMALL)
    with pytest.raises(DatasetLayoutError, match="val.txt"):
        dm.setup("fit")


def test_image_without_mask(voc_copy: Path):
    image_id = _ids(voc_copy, "train")[2]
    mask = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    mask.unlink()
    dm = VOCDataModule(str(voc_copy), **SMALL)
    with pytest.raises(DatasetLayoutError, match="has no mask") as info:
        dm.setup("fit")
    assert str(mask) in str(info.value) and f"{image_id}.jpg" in str(info.value)


def test_listed_image_missing(voc_copy: Path):
    image_id = _ids(voc_copy, "val")[0]
    (voc_copy / VOC / "JPEGImages" / f"{image_id}.jpg").unlink()
    dm = VOCDataModule(str(voc_copy), **SMALL)
    with pytest.raises(DatasetLayoutError, match=f"{image_id}.jpg"):
        dm.setup("fit")


def test_rgb_mask_is_rejected(voc_copy: Path):
    image_id = _ids(voc_copy, "train")[0]
    path = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    Image.open(path).convert("RGB").save(path)
    dm = VOCDataModule(str(voc_copy), **SMALL)
    dm.setup("fit")
    with pytest.raises(CorruptImageError, match="mode 'RGB'") as info:
        dm.train_dataset[0]
    assert str(path) in str(info.value)


def test_image_mask_size_mismatch(voc_copy: Path):
    image_id = _ids(voc_copy, "val")[1]
    path = voc_copy / VOC / "SegmentationClass" / f"{image_id}.png"
    mask = Image.open(path)
    mask.crop((0, 0, mask.width - 5, mask.height)).save(path)
    dm = VOCDataModule(str(voc_copy), **SMALL)
    dm.setup("validate")
    with pytest.raises(ImagePairError, match=f"{image_id}.png"):
        dm.val_dataset[1]


def test_corrupt_jpeg_and_skip(voc_copy: Path, corrupt):
    image_id = _ids(voc_copy, "train")[1]
    path = voc_copy / VOC / "JPEGImages" / f"{image_id}.jpg"
    corrupt(path)
    dm = VOCDataModule(str(voc_copy), **SMALL)
    dm.setup("fit")
    with pytest.raises(CorruptImageError, match=str(path)):
        dm.train_dataset[1]
    dm = VOCDataModule(str(voc_copy), **SMALL, skip_corrupt=True)
    dm.setup("fit")
    with pytest.warns(CorruptImageWarning, match="1 skipped so far"):
        image, mask = dm.train_dataset[1]
    assert image.shape == (3, 64, 64) and mask.shape == (64, 64)


def test_sbd_train_list(voc_copy: Path, embedded_root: Path):
    src = embedded_root / "voc" / VOC
    extra = _ids(embedded_root / "voc", "train")[10:13]
    (voc_copy / VOC / "SegmentationClassAug").mkdir()
    for image_id in extra:
        shutil.copy(src / "JPEGImages" / f"{image_id}.jpg", voc_copy / VOC / "JPEGImages")
        # SBD masks converted to greyscale index PNGs, as in the usual SegmentationClassAug.
        indices = np.array(Image.open(src / "SegmentationClass" / f"{image_id}.png"))
        Image.fromarray(indices).save(voc_copy / VOC / "SegmentationClassAug" / f"{image_id}.png")
    val_id, train_id = _ids(voc_copy, "val")[0], _ids(voc_copy, "train")[0]
    listing = voc_copy / VOC / "ImageSets/Segmentation/train_aug.txt"
    listing.write_text("\n".join([*extra, val_id, train_id]) + "\n")
    dm = VOCDataModule(str(voc_copy), **SMALL, sbd_train_list="ImageSets/Segmentation/train_aug.txt")
    dm.setup("fit")
    stems = [Path(image).stem for image, _ in dm.train_dataset.samples]
    assert len(stems) == 4 + 3 and val_id not in stems and stems.count(train_id) == 1
    assert all("SegmentationClassAug" in mask for image, mask in dm.train_dataset.samples[4:])
    _, mask = dm.train_dataset[5]
    assert set(mask.unique().tolist()) <= set(range(21)) | {255}
    # An SBD id with neither an Aug nor a VOC mask names both paths it tried.
    listing.write_text(f"{extra[0]}\n2099_000001\n")
    shutil.copy(src / "JPEGImages" / f"{extra[0]}.jpg", voc_copy / VOC / "JPEGImages" / "2099_000001.jpg")
    dm = VOCDataModule(str(voc_copy), **SMALL, sbd_train_list=str(listing))
    with pytest.raises(DatasetLayoutError, match="SegmentationClassAug/2099_000001.png"):
        dm.setup("fit")


def test_learnable_structure(embedded_root: Path):
    """Per-pixel colour alone (nearest class-mean chromaticity) beats chance clearly."""
    root = embedded_root / "voc" / VOC

    def pixels(split: str, count: int):
        xs, ys = [], []
        for image_id in _ids(embedded_root / "voc", split)[:count]:
            rgb = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"), np.float32) / 255
            xs.append(rgb.reshape(-1, 3))
            ys.append(np.array(Image.open(root / "SegmentationClass" / f"{image_id}.png")).reshape(-1))
        x, y = np.concatenate(xs), np.concatenate(ys)
        keep = y != 255
        x, y = x[keep], y[keep]
        chroma = x / (x.sum(1, keepdims=True) + 1e-3)
        return np.concatenate([chroma, x.max(1, keepdims=True) - x.min(1, keepdims=True)], 1), y

    x_train, y_train = pixels("train", 150)
    x_val, y_val = pixels("val", 40)
    means = np.stack([x_train[y_train == c].mean(0) for c in range(21)])
    predicted = np.argmin(((x_val[:, None] - means[None]) ** 2).sum(-1), axis=1)
    confusion = np.bincount(y_val * 21 + predicted, minlength=21 * 21).reshape(21, 21)
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    # Always predicting background would score about 0.79 / 21 = 0.04 mIoU.
    assert np.nanmean(iou) > 0.12
    assert (predicted == y_val)[y_val > 0].mean() > 0.35  # object pixels, 20 classes
