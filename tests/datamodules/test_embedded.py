"""Embedded-data store: location, atomic and locked generation, regeneration, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest

from datamodules import ImageNetDataModule
from datamodules.embedded import EMBEDDED, MANIFEST_NAME, EmbeddedSpec, embedded_root, ensure_generated, is_complete
from datamodules.embedded.store import ENV_VAR

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _spec(calls: list[str], *, version: int = 1, fail_after: int | None = None, delay: float = 0.0) -> EmbeddedSpec:
    def generate(folder: Path) -> None:
        calls.append(str(folder))
        time.sleep(delay)
        for i in range(5):
            if fail_after is not None and i == fail_after:
                raise KeyboardInterrupt  # an interrupted run (Ctrl-C, a killed job)
            (folder / "sub").mkdir(exist_ok=True)
            (folder / "sub" / f"{i}.txt").write_text(str(i))

    return EmbeddedSpec("fake", version, generate, "test dataset")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            h.update(str(path.relative_to(folder)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_default_root_is_repo_data_embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    repo = Path(__file__).resolve().parents[2]
    assert embedded_root() == repo / "data" / "embedded"
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert embedded_root() == tmp_path


def test_generate_once_then_reuse(tmp_path: Path):
    calls: list[str] = []
    folder = ensure_generated(_spec(calls), tmp_path)
    assert folder == tmp_path / "fake" and len(calls) == 1
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["num_files"] == 5 and manifest["version"] == 1
    ensure_generated(_spec(calls), tmp_path)
    assert len(calls) == 1


def test_interrupted_generation_leaves_nothing_half_written(tmp_path: Path):
    calls: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        ensure_generated(_spec(calls, fail_after=3), tmp_path)
    assert not (tmp_path / "fake").exists()
    assert not list(tmp_path.glob(".fake.tmp-*"))
    folder = ensure_generated(_spec(calls), tmp_path)  # the lock was released
    assert is_complete(folder, _spec([])) and len(calls) == 2


def test_incomplete_or_outdated_folder_is_regenerated(tmp_path: Path):
    calls: list[str] = []
    folder = ensure_generated(_spec(calls), tmp_path)
    (folder / "sub" / "2.txt").unlink()  # a file deleted by hand
    ensure_generated(_spec(calls), tmp_path)
    assert len(calls) == 2 and (folder / "sub" / "2.txt").is_file()
    (folder / MANIFEST_NAME).unlink()  # e.g. a copy made by hand, never finished
    ensure_generated(_spec(calls), tmp_path)
    assert len(calls) == 3
    ensure_generated(_spec(calls, version=2), tmp_path)  # the generator changed
    assert len(calls) == 4 and json.loads((folder / MANIFEST_NAME).read_text())["version"] == 2
    # A stale temporary folder of a killed process is cleared by the next generation.
    (tmp_path / ".fake.tmp-dead").mkdir()
    (folder / MANIFEST_NAME).unlink()
    ensure_generated(_spec(calls), tmp_path)
    assert not (tmp_path / ".fake.tmp-dead").exists()


def test_concurrent_callers_generate_once(tmp_path: Path):
    calls: list[str] = []
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_generated(_spec(calls, delay=0.3), tmp_path)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [tmp_path / "fake"] * 3


def test_generation_is_deterministic(tmp_path: Path, embedded_root: Path):
    again = ensure_generated(EMBEDDED["voc"], tmp_path)
    assert _digest(again) == _digest(embedded_root / "voc")


def test_datamodule_generates_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedded_root: Path):
    """A fresh clone: no data/embedded yet; prepare_data creates it in the real layout."""
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "fresh"))
    dm = ImageNetDataModule(num_workers=0, train_crop_size=32, val_resize_size=36, val_crop_size=32)
    dm.prepare_data()
    root = tmp_path / "fresh" / "imagenet"
    assert sorted(os.listdir(root / "train")) == sorted(os.listdir(embedded_root / "imagenet" / "train"))
    assert sum(1 for _ in (root / "val").rglob("*.JPEG")) == 250
    dm.setup("fit")
    assert dm.root == root


def test_generated_folder_is_readable_by_others(tmp_path: Path):
    old = os.umask(0o022)
    try:
        folder = ensure_generated(_spec([]), tmp_path)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o755
