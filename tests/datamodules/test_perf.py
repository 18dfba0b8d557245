"""``python -m benchmark.perf data`` prints its tables (tiny settings)."""

from __future__ import annotations

import argparse

import pytest

from benchmark.perf import data

# torchvision 0.29 deprecates its image codecs (datamodules.images decodes with them).
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_loaders_table(capsys):
    assert data.run(_args("--tables", "loaders", "--datamodules", "voc", "--workers", "0", "--batches", "2", "--repeats", "1")) == 0
    out = capsys.readouterr().out
    # The backend is the one the bench config sets (albumentations at the embedded sizes).
    assert "Machine:" in out and "| VOCDataModule | albumentations |" in out and "images/s" in out


def test_backends_table(capsys):
    assert data.run(_args("--tables", "backends", "--datamodules", "div2k", "--samples", "3", "--repeats", "1")) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| DIV2K")]
    assert len(rows) == 2 and all(("albumentations |" in r) or ("torchvision v2 |" in r) for r in rows)
