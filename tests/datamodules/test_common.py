"""What every DataModule shares: DDP evaluation sampler, Lightning and CLI integration."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser

from datamodules import DIV2KDataModule, ImageNetDataModule, UnpaddedDistributedSampler, VOCDataModule

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.mark.parametrize("size,world", [(10, 3), (7, 2), (2, 4)])
def test_unpadded_sampler_covers_each_sample_once(size: int, world: int):
    seen = []
    for rank in range(world):
        sampler = UnpaddedDistributedSampler(range(size), num_replicas=world, rank=rank)
        indices = list(sampler)
        assert len(indices) == len(sampler)
        seen += indices
    assert sorted(seen) == list(range(size))


def test_val_loader_under_ddp_does_not_duplicate():
    dm = VOCDataModule(crop_size=64, num_workers=0)
    seen = []
    for rank in range(3):
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=3)  # what Lightning attaches
        loader = dm.val_dataloader()
        assert isinstance(loader.sampler, UnpaddedDistributedSampler)
        seen += list(loader.sampler)
    assert sorted(seen) == list(range(40))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        VOCDataModule(batch_size=0)
    with pytest.raises(ValueError, match="backend"):
        VOCDataModule(backend="pillow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="val_resize_size"):
        ImageNetDataModule(val_resize_size=200, val_crop_size=224)
    with pytest.raises(ValueError, match="scale"):
        DIV2KDataModule(scale=5)  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [ImageNetDataModule, VOCDataModule, DIV2KDataModule])
def test_cli_builds_arguments_from_the_signature(cls):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    help_text = parser.format_help()
    for name in ("data_dir", "batch_size", "num_workers", "pin_memory", "persistent_workers", "skip_corrupt", "seed", "backend"):
        assert f"--data.{name}" in help_text
    config = parser.parse_args(["--data.batch_size", "3", "--data.num_workers", "0"])
    dm = cls(**config.data)
    assert dm.batch_size == 3 and dm.hparams["batch_size"] == 3


class _TinyClassifier(pl.LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(48, num_classes))

    def training_step(self, batch, batch_idx):
        images, targets = batch
        return torch.nn.functional.cross_entropy(self.net(images), targets)

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        self.log("val/loss", torch.nn.functional.cross_entropy(self.net(images), targets))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_runs_the_hooks(tmp_path):
    dm = ImageNetDataModule(train_crop_size=32, val_resize_size=36, val_crop_size=32, batch_size=16, num_workers=1)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_TinyClassifier(dm.num_classes), datamodule=dm)
    assert trainer.global_step == 3 and "val/loss" in trainer.callback_metrics


def test_backends_agree_on_deterministic_presets():
    from datamodules.transforms import ClassificationTransform, PairedPatchTransform, SegmentationTransform

    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 90, 70), dtype=torch.uint8, generator=generator)
    mask = torch.randint(0, 21, (90, 70), dtype=torch.uint8, generator=generator).numpy()
    for mode, crop in (("center", 100), ("center", 50), ("full", 0)):
        a = SegmentationTransform(mode, crop, backend="albumentations")(image, mask)
        t = SegmentationTransform(mode, crop, backend="torchvision")(image, mask)
        assert torch.equal(a[1], t[1]) and torch.allclose(a[0], t[0], atol=1e-5)
    a = ClassificationTransform("resize", 32, backend="albumentations")(image)
    t = ClassificationTransform("resize", 32, backend="torchvision")(image)
    assert a.shape == t.shape and (a - t).abs().mean() < 0.15  # resampling kernels differ slightly
    lr, hr = image[:, :30, :20], image.repeat_interleave(3, 1).repeat_interleave(3, 2)[:, :90, :60]
    for mode in ("center", "full"):
        a = PairedPatchTransform(mode, 3, 24, backend="albumentations")(lr, hr)
        t = PairedPatchTransform(mode, 3, 24, backend="torchvision")(lr, hr)
        assert torch.equal(a[0], t[0]) and torch.equal(a[1], t[1])
