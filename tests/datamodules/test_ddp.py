"""Two CPU processes under Lightning DDP: validation sees every sample exactly once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from datamodules import VOCDataModule

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


class _RecordingModule(pl.LightningModule):
    """Writes a fingerprint of every validation sample its rank saw."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out
        self.head = torch.nn.Conv2d(3, 21, 1)
        self.seen: list[float] = []

    def training_step(self, batch, batch_idx):
        images, masks = batch
        return torch.nn.functional.cross_entropy(self.head(images), masks, ignore_index=255)

    def validation_step(self, batch, batch_idx):
        self.seen += [round(float(image.sum()), 3) for image in batch[0]]

    def on_validation_epoch_end(self) -> None:
        Path(self.out, f"rank{self.global_rank}.json").write_text(json.dumps(self.seen))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_ddp_validation_counts_each_sample_once(voc_copy: Path, embedded_root: Path, tmp_path: Path):
    # 3 validation images on 2 ranks: a padding DistributedSampler would show one twice.
    voc, src = voc_copy / "VOCdevkit/VOC2012", embedded_root / "voc/VOCdevkit/VOC2012"
    extra = (src / "ImageSets/Segmentation/val.txt").read_text().split()[5]
    shutil.copy(src / "JPEGImages" / f"{extra}.jpg", voc / "JPEGImages")
    shutil.copy(src / "SegmentationClass" / f"{extra}.png", voc / "SegmentationClass")
    with open(voc / "ImageSets/Segmentation/val.txt", "a") as handle:
        handle.write(f"{extra}\n")
    dm = VOCDataModule(str(voc_copy), crop_size=48, batch_size=2, num_workers=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_RecordingModule(str(tmp_path)), datamodule=dm)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(len(r) for r in ranks) == [1, 2]
    assert len(set(ranks[0]) | set(ranks[1])) == 3
