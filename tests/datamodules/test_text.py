"""TextDataModule: file checks with clear errors, contiguous deterministic splits, the enwik8
layout, byte windows, epoch-seeded training order, and the embedded Shakespeare corpus."""

from __future__ import annotations

import pytest
import torch

from datamodules import DatasetLayoutError, TextDataModule, TextFileError
from datamodules.text import ENWIK8_SPLIT, split_bounds

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, "
        "must be in want of a wife. Café, naïve, 東京. ") * 12  # fmt: skip


def _module(path, **kwargs):
    return TextDataModule(data_dir=str(path), **{"seq_len": 16, "batch_size": 4, "val_batch_size": 4, **kwargs})


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- errors
def test_missing_file_names_it_and_the_fix(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(DatasetLayoutError, match=r"nope\.txt does not exist; pass data_dir="):
        _module(path).prepare_data()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"")
    with pytest.raises(DatasetLayoutError, match=r"empty\.txt is empty"):
        _module(path).setup("fit")


def test_binary_file_is_refused_with_the_offset_of_its_nul_byte(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 8 + b"text")
    with pytest.raises(TextFileError, match=r"model\.bin looks binary \(a NUL byte at offset 4\)"):
        _module(path).prepare_data()


def test_non_utf8_file_is_refused_with_the_offset_and_a_fix(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("déjà vu".encode("latin-1"))  # é = 0xe9 at byte 1
    with pytest.raises(TextFileError, match=r"latin1\.txt is not valid UTF-8 \(byte offset 1.*iconv"):
        _module(path).prepare_data()


def test_utf8_cut_inside_a_character_at_the_end_is_refused(tmp_path):
    path = tmp_path / "cut.txt"
    path.write_bytes("naïve 東".encode()[:-1])
    with pytest.raises(TextFileError, match="ends inside a multi-byte character"):
        _module(path).prepare_data()


def test_a_folder_without_enwik8_is_refused(tmp_path):
    with pytest.raises(DatasetLayoutError, match="folder without an enwik8 file"):
        _module(tmp_path).prepare_data()


@pytest.mark.parametrize(("kwargs", "match"), [({"seq_len": 0}, "Invalid seq_len: 0"), ({"val_fraction": 1.0}, "Invalid val_fraction: 1.0")])
def test_invalid_arguments(text_file, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _module(text_file, **kwargs)


def test_a_split_shorter_than_one_sequence(text_file):
    with pytest.raises(ValueError, match="Invalid seq_len: 400 .*fewer than seq_len \\+ 1"):
        _module(text_file, seq_len=400, val_fraction=0.2).setup("fit")


# ---------------------------------------------------------------------- splits and windows
def test_split_is_contiguous_and_windows_are_the_file_bytes(text_file):
    data = text_file.read_bytes()
    dm = _module(text_file, val_fraction=0.1)
    dm.setup("fit")
    cut = round(len(data) * 0.9)
    assert (dm.train_dataset.start, dm.train_dataset.stop) == (0, cut)
    assert (dm.val_dataset.start, dm.val_dataset.stop) == (cut, len(data))
    assert len(dm.train_dataset) == (cut - 1) // 16
    assert len(dm.val_dataset) == (len(data) - cut - 1) // 16
    for dataset, start in ((dm.train_dataset, 0), (dm.val_dataset, cut)):
        for i in (0, len(dataset) - 1):
            x, y = dataset[i]
            assert x.dtype == torch.int64 and x.shape == y.shape == (16,)
            begin = start + 16 * i
            assert bytes(x.tolist()) == data[begin : begin + 16]
            assert bytes(y.tolist()) == data[begin + 1 : begin + 17]


def test_split_is_deterministic(text_file):
    first, second = _module(text_file), _module(text_file, seed=7)
    first.setup("fit"), second.setup("fit")
    for split in ("train_dataset", "val_dataset"):
        a, b = getattr(first, split), getattr(second, split)
        assert len(a) == len(b)
        assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_split_bounds_by_hand():
    assert split_bounds(1000, False, 0.1) == {"train": (0, 900), "val": (900, 1000), "test": (900, 1000)}
    assert split_bounds(10**8, True, 0.1) == {
        "train": (0, 90_000_000), "val": (90_000_000, 95_000_000), "test": (95_000_000, 100_000_000)
    }  # fmt: skip
    assert ENWIK8_SPLIT == (0.90, 0.05, 0.05)


@pytest.mark.parametrize("pass_folder", [False, True])
def test_enwik8_layout_train_val_test_90_5_5(tmp_path, pass_folder):
    # enwik8 is read as bytes: its 10^8-byte cut may split a character, so no UTF-8 check.
    data = bytes(range(256)) * 7 + b"\xe6\x9d"  # 1794 bytes, ends inside a character
    (tmp_path / "enwik8").write_bytes(data)
    dm = _module(tmp_path if pass_folder else tmp_path / "enwik8")
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    n = len(data)
    train_end, val_end = round(n * 0.9), round(n * 0.95)
    assert (dm.train_dataset.start, dm.train_dataset.stop) == (0, train_end)
    assert (dm.val_dataset.start, dm.val_dataset.stop) == (train_end, val_end)
    assert (dm.test_dataset.start, dm.test_dataset.stop) == (val_end, n)
    x, _ = next(iter(dm.test_dataloader()))
    assert bytes(x[0].tolist()) == data[val_end : val_end + 16]


# ------------------------------------------------------------------------ sampler seeding
def _epoch_order(dm, epoch):
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)
    return list(loader.sampler)


def test_training_order_is_a_function_of_seed_and_epoch(text_file):
    a, b, other = _module(text_file, seed=0), _module(text_file, seed=0), _module(text_file, seed=1)
    for dm in (a, b, other):
        dm.setup("fit")
    n = len(a.train_dataset)
    order0, order1 = _epoch_order(a, 0), _epoch_order(a, 1)
    assert sorted(order0) == list(range(n))  # each window once per epoch
    assert order0 == _epoch_order(b, 0) and order1 == _epoch_order(b, 1)  # a resumed run sees the same
    assert order0 != order1
    assert order0 != _epoch_order(other, 0)
    # The batches are those windows, in that order.
    x, _ = next(iter(a.train_dataloader()))
    assert torch.equal(x[0], a.train_dataset[order0[0]][0])


def test_probe_subset_is_fixed_by_the_datamodule_seed(text_file):
    dm = _module(text_file)
    first = torch.cat([x for x, _ in dm.probe_dataloader(6, 3, seed=0)])
    again = torch.cat([x for x, _ in _module(text_file).probe_dataloader(6, 3, seed=5)])
    assert first.shape == (6, 16) and torch.equal(first, again)


# ---------------------------------------------------------------------------- embedded
@pytest.mark.embedded
def test_embedded_corpus_is_shakespeare_prose_over_a_million_characters():
    dm = TextDataModule(seq_len=64, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    text = dm.root.read_text(encoding="ascii")  # ASCII: bytes are characters
    assert len(text) > 5_000_000
    assert "To be, or not to be" in text and "From fairest creatures we desire increase" in text
    assert "Gutenberg" not in text  # the licence headers are not part of the corpus
    assert dm.vocab_size == 256 and dm.train_dataset.stop == dm.val_dataset.start
