"""``python -m benchmark.perf train``: the Lightning-vs-plain harness, on CPU with tiny settings."""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmark.perf import train

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: two intra-op threads only contend (all the more on a shared machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_table_sync_census_and_profile(capsys):
    argv = ("--device", "cpu", "--tasks", "srresnet", "--optimizers", "sgd", "clipped_sstm", "--steps", "2",
            "--warmup", "1", "--batch-size", "2", "--image-size", "16", "--sync-check", "--profile")  # fmt: skip
    assert train.run(_args(*argv)) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| srresnet")]
    assert [r[3].strip() for r in rows] == ["sgd", "clipped_sstm"]
    for row in rows:
        plain, light, ratio = (float(c.strip().rstrip("%").replace(",", "")) for c in row[5:8])
        assert plain > 0 and light > 0 and ratio == pytest.approx(100 * light / plain, rel=0.01)
        # The plain loop never reads a device value; Lightning only when it writes to the
        # loggers (log_every_n_steps = 10: one interval is inspected), a few values each time.
        assert float(row[9]) == 0.0 and 0.0 < float(row[10]) < 2.0
    assert out.count("Lightning's additions") == 2 and "OptimizerStatsCallback" in out


@pytest.mark.parametrize("optimizer", ["sgd", "clipped_sstm"])
def test_both_loops_train_the_same_model(optimizer):
    """Same module, initial weights, batch, precision and optimizer: after the same number
    of steps, the plain loop and Lightning hold the same parameters and state."""
    task, device = train.TASKS["srresnet"], torch.device("cpu")
    batch = task.make_batch(2, 16, device, torch.Generator().manual_seed(0))
    plain = train.build_module(task, optimizer, device, compiled=False, channels_last=True)
    light = train.build_module(task, optimizer, device, compiled=False, channels_last=True)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), light.state_dict().values()))
    seconds, _ = train.plain_run(plain, batch, device, "32-true", warmup=1, steps=3)
    light_seconds, window = train.lightning_run(light, batch, device, "32-true", warmup=1, steps=2)
    assert seconds > 0 and light_seconds > 0 and len(window.stamps) == 3  # the timed window: 2 steps
    # Lightning runs one batch past the window (whose start closes it): 4 steps each.
    if optimizer == "clipped_sstm":
        assert light.trainer.optimizers[0].global_state["step"].item() == 4
    for (name, a), b in zip(plain.state_dict().items(), light.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


# ------------------------------------------------------------------ input pipeline
# ``python -m benchmark.perf input`` and the GPU-decode path it times
# (datamodules.gpu_decode), run on CPU tensors.


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    from benchmark.perf.input import make_jpegs

    return make_jpegs(tmp_path_factory.mktemp("jpegs"), 4, (120, 90), seed=1)


def test_input_command_prints_rates_and_verdict(capsys, jpegs):
    from benchmark.perf import input as perf_input

    parser = argparse.ArgumentParser()
    perf_input.add_arguments(parser)
    argv = ["--count", "3", "--size", "160x120", "--repeats", "1", "--workers", "0", "--device", "cpu"]
    args = parser.parse_args(argv)
    assert perf_input.run(args) == 0
    out = capsys.readouterr().out
    assert "| **decode + transform, torchvision** |" in out and "cores for 11.9k/s (eager)" in out
    assert "cores (one kept for the training process)" in out and "not measured, no CUDA device" in out


def test_crop_params_follow_torchvision():
    from torchvision.transforms import RandomResizedCrop

    from datamodules.gpu_decode import random_resized_crop_params

    heights = torch.tensor([375, 500, 10, 1000, 224] * 400)
    widths = torch.tensor([500, 375, 1000, 10, 224] * 400)
    boxes = random_resized_crop_params(heights, widths, generator=torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= heights).all() and (left + w <= widths).all()
    # Very elongated images never fit a crop of ratio 3/4..4/3: torchvision's centre fallback.
    for i in (2, 3):
        assert tuple(boxes[i].tolist()) == RandomResizedCrop.get_params(torch.zeros(1, heights[i], widths[i]),
                                                                        (0.08, 1.0), (3 / 4, 4 / 3))  # fmt: skip
    fraction = (h * w).double() / (heights * widths).double()
    regular = torch.arange(len(boxes)) % 5 < 2
    assert fraction[regular].min() >= 0.07 and fraction[regular].max() <= 1.0
    assert 0.35 < fraction[regular].mean() < 0.5  # E[U(0.08, 1)] = 0.54, minus the draws that do not fit
    aspect = w[regular].double() / h[regular].double()
    assert aspect.min() > 0.7 and aspect.max() < 1.4


def test_gpu_augment_equals_the_torchvision_ops_on_cpu(jpegs):
    from torchvision.io import read_file
    from torchvision.transforms.v2 import functional as TF

    from datamodules.gpu_decode import EncodedImages, GPUTrainAugment, collate_encoded
    from datamodules.images import read_image
    from datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD

    data, labels = collate_encoded([EncodedImages([(p, i) for i, p in enumerate(jpegs)])[i] for i in range(4)])
    assert labels.tolist() == [0, 1, 2, 3] and torch.equal(data[0], read_file(str(jpegs[0])))
    augment = GPUTrainAugment(32, device="cpu", seed=3)
    images = augment.decode(data)
    assert all(torch.equal(a, read_image(p)) for a, p in zip(images, jpegs))  # the DataModule's decoder
    boxes = torch.tensor([[0, 0, 90, 120], [10, 20, 40, 30], [5, 5, 64, 64], [30, 50, 60, 70]])
    flips = torch.tensor([False, True, False, True])
    out = augment.crop_resize_flip_normalize(images, boxes, flips)
    for img, (top, left, h, w), flip, got in zip(images, boxes.tolist(), flips, out):
        expected = TF.resized_crop(img.float(), top, left, h, w, [32, 32], antialias=True)
        expected = TF.horizontal_flip(expected) if flip else expected
        expected = TF.normalize(expected / 255, IMAGENET_MEAN, IMAGENET_STD)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The whole call: shapes, dtype, and the same batch again from the same seed.
    batch, batch_labels = augment(data, labels)
    again, _ = GPUTrainAugment(32, device="cpu", seed=3)(data, labels)
    assert batch.shape == (4, 3, 32, 32) and batch.dtype == torch.float32 and torch.equal(batch_labels, labels)
    assert torch.equal(batch, again) and batch.abs().max() < 3


def test_all_report(tmp_path, capsys):
    """``python -m benchmark.perf all --quick``: the sections in one report, written to a file."""
    from benchmark.perf import report

    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    output = tmp_path / "perf.md"
    args = parser.parse_args(["--device", "cpu", "--quick", "--sections", "optim", "train", "--output", str(output)])
    assert report.run(args) == 0
    text = output.read_text()
    assert text == capsys.readouterr().out  # what was printed is what was written
    assert text.startswith("# Performance") and "Command: `python -m benchmark.perf all --device cpu --sections " \
        "optim train --quick --output" in text  # fmt: skip
    assert "## Optimizer step time on cpu" in text and "## Training throughput on cpu" in text
    assert "| clipped_sstm |" in text and "| srresnet | 2 | 16 | clipped_sstm | eager |" in text
