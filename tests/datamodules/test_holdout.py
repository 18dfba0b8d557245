"""The held-out tuning split: deterministic, disjoint, about 10%, on every DataModule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from datamodules import DIV2KDataModule, ImageNetDataModule, VOCDataModule, holdout
from datamodules.holdout import holdout_key, sample_id, split_holdout

ROOT = "/data"
IDS = [f"train/n{c:08d}/img_{i:05d}.JPEG" for c in range(20) for i in range(500)]  # 10,000 ids
SAMPLES = [(f"{ROOT}/{i}", k) for k, i in enumerate(IDS)]


def _held(fraction, samples=SAMPLES):
    return split_holdout(samples, ROOT, fraction, key=lambda s: s[0])[1]


def test_fraction_is_exact_ordered_and_nested():
    held10, held20 = _held(0.1), _held(0.2)
    assert len(held10) == 1000 and len(held20) == 2000  # round(0.1 * 10000), round(0.2 * 10000)
    assert set(held10) < set(held20)  # a larger fraction only adds samples
    train, held = split_holdout(SAMPLES, ROOT, 0.1, key=lambda s: s[0])
    assert [s[1] for s in train] == sorted(s[1] for s in train)  # input order kept
    assert len(train) == 9000 and set(train).isdisjoint(held)
    # the held-out ids are spread over the classes, not the first ones in sorted order
    assert len({s[0].split("/")[3] for s in held10}) == 20
    # at least one held out, however small the set
    assert len(_held(0.1, SAMPLES[:3])) == 1


def test_the_split_does_not_depend_on_the_process():
    # Python's hash() is salted per process (PYTHONHASHSEED); the split must not be.
    # The module alone (it imports only the standard library), not the heavy package.
    code = (
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('h', sys.argv[1]); "
        "h = importlib.util.module_from_spec(spec); spec.loader.exec_module(h); "
        "print([h.holdout_key(f'a/{i}.png') for i in range(50)])"
    )
    module = str(Path(holdout.__file__))
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outs.add(subprocess.run([sys.executable, "-c", code, module], env=env, capture_output=True, text=True, check=True).stdout)
    assert outs == {str([holdout_key(f"a/{i}.png") for i in range(50)]) + "\n"}


def test_sample_id_and_errors(tmp_path):
    assert sample_id(tmp_path / "train" / "x" / "a.jpg", tmp_path) == "train/x/a.jpg"
    with pytest.raises(ValueError, match="is not under the dataset root"):
        sample_id("/elsewhere/a.jpg", tmp_path)
    with pytest.raises(ValueError, match="Invalid holdout_fraction"):
        split_holdout(SAMPLES, ROOT, 1.0, key=lambda s: s[0])
    with pytest.raises(ValueError, match="leaves none to train on"):
        split_holdout([(str(tmp_path / "a.jpg"), 0)], tmp_path, 0.1, key=lambda s: s[0])


def _tiny(cls, **kwargs):
    common = {"num_workers": 0, "persistent_workers": False}
    if cls is ImageNetDataModule:
        return cls(train_crop_size=32, val_resize_size=36, val_crop_size=32, batch_size=8, **common, **kwargs)
    if cls is VOCDataModule:
        return cls(crop_size=48, batch_size=4, **common, **kwargs)
    return cls(patch_size=24, repeat=1, val_mode="center_crop", val_crop_size=48, batch_size=2, val_batch_size=2, **common, **kwargs)


def _files(dataset):
    return [s[0] for s in dataset.samples]


@pytest.mark.parametrize("cls", [ImageNetDataModule, VOCDataModule, DIV2KDataModule])
def test_tune_split_on_the_embedded_data(cls):
    plain = _tiny(cls)
    plain.setup("fit")
    tuning = _tiny(cls, tune_split=True)
    tuning.setup("fit")
    train, held, full, val = _files(tuning.train_dataset), _files(tuning.val_dataset), _files(plain.train_dataset), _files(plain.val_dataset)
    assert set(train).isdisjoint(held)  # never trained on what tuning scores
    assert sorted(train + held) == sorted(full)  # together: the whole training split
    assert set(held).isdisjoint(val)  # the reported split is not looked at
    assert len(held) == max(1, round(0.1 * len(full)))
    # held-out samples use the evaluation transforms: a batch of them loads
    batch = next(iter(tuning.val_dataloader()))
    assert len(batch[0]) >= 1
    # the same split for another seed, and the held-out part grows with the fraction
    other = _tiny(cls, tune_split=True, seed=5)
    other.setup("fit")
    assert _files(other.val_dataset) == held
    wider = _tiny(cls, tune_split=True, holdout_fraction=0.3)
    wider.setup("fit")
    assert set(held) < set(_files(wider.val_dataset))


def test_bad_fraction_is_refused_at_construction():
    with pytest.raises(ValueError, match="Invalid holdout_fraction: 0"):
        ImageNetDataModule(holdout_fraction=0.0)


def test_tune_split_of_a_text_is_the_end_of_its_training_range(tmp_path):
    from datamodules import TextDataModule

    path = tmp_path / "prose.txt"
    path.write_bytes(bytes(range(32, 127)) * 40)  # 3800 bytes
    kwargs = dict(data_dir=str(path), seq_len=10, batch_size=2, val_fraction=0.2, num_workers=0, persistent_workers=False)
    plain, tuning = TextDataModule(**kwargs), TextDataModule(**kwargs, tune_split=True)
    plain.setup("fit")
    tuning.setup("fit")
    # training range [0, 3040): held out its last 10% = [2736, 3040); the reported split untouched
    assert (plain.train_dataset.start, plain.train_dataset.stop) == (0, 3040)
    assert (tuning.train_dataset.start, tuning.train_dataset.stop) == (0, 2736)
    assert (tuning.val_dataset.start, tuning.val_dataset.stop) == (2736, 3040)
    assert tuning.val_dataset.stop <= plain.val_dataset.start
    with pytest.raises(ValueError, match="Invalid holdout_fraction: 0.001"):
        bad = TextDataModule(**kwargs, tune_split=True, holdout_fraction=0.001)
        bad.setup("fit")
