"""The gradient-noise probe, its Lightning callback and its plots, on tiny models."""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.loggers import Logger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmark.noise import GradientNoiseCallback, GradientNoiseProbe, ProbeResult, summarize
from benchmark.noise.plots import markdown_table, plot_alpha_trajectory, save_plots, write_table
from benchmark.noise.report import read_summaries, verdict_lines, write_report


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; avoids OpenMP contention on a shared CPU
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ fixtures
def _regression(subset=64, d_in=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(subset, d_in, dtype=torch.float64, generator=gen)
    y = x @ torch.randn(d_in, 1, dtype=torch.float64, generator=gen) + 0.3 * torch.randn(
        subset, 1, dtype=torch.float64, generator=gen
    )
    model = nn.Linear(d_in, 1).double()
    return model, x, y


def _per_sample_grads(model: nn.Linear, x, y):
    """∇ of (w·x + b − y)² per sample, flattened as (weight, bias): the float64 reference."""
    with torch.no_grad():
        r = (x @ model.weight.T + model.bias - y).squeeze(1)
    return torch.cat([2 * r[:, None] * x, 2 * r[:, None]], dim=1)


def _mse_probe(model, x, y, **kwargs):
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    probe = GradientNoiseProbe(model, lambda b: F.mse_loss(model(b[0]), b[1]), dtype=torch.float64, **kwargs)
    return probe, loader


class _Net(nn.Module):
    """BatchNorm (buffers), dropout (RNG) and an unused head (a parameter without grad)."""

    def __init__(self, d_in=6, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d_in, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.3))
        self.out = nn.Linear(width, 3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        return self.out(self.body(x))


# ------------------------------------------------------------------ the probe
def test_noise_norms_match_direct_computation_on_linear_regression():
    model, x, y = _regression()
    probe, loader = _mse_probe(model, x, y, num_batches=20, sketch_dim=16, block_size=4, seed=3)
    res = probe.run(loader)

    per_sample = _per_sample_grads(model, x, y)
    full = per_sample.mean(0)  # the subset's mean gradient
    assert res.full_grad_norm == pytest.approx(float(full.norm()), rel=1e-12)
    idx = res.batch_indices
    assert idx.shape == (20, 8)
    assert all(len(set(row.tolist())) == 8 for row in idx)  # b distinct samples per batch
    noise = per_sample[idx].mean(1) - full  # (K, D): what the probe must not store
    torch.testing.assert_close(res.norms, noise.norm(dim=1), rtol=1e-10, atol=0)

    ref = ProbeResult.from_noise(noise, sketch_dim=16, block_size=4)
    torch.testing.assert_close(res.sketches, ref.sketches, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(res.block_norms, ref.block_norms, rtol=1e-10, atol=0)
    torch.testing.assert_close(res.block_member_norms, noise.norm(dim=1).reshape(5, 4), rtol=1e-10, atol=0)
    assert res.trace_sq == pytest.approx(ref.trace_sq, rel=1e-10)
    assert res.trace == pytest.approx(float((noise**2).sum(1).mean()), rel=1e-10)
    assert (res.num_params, res.batch_size, res.subset_size, res.num_batches) == (6, 8, 64, 20)
    assert res.time_s >= res.time_noise_s > 0


def test_batches_are_iid_draws_from_the_subset_and_seeded():
    model, x, y = _regression(subset=40)
    probe, loader = _mse_probe(model, x, y, num_batches=30, sketch_dim=0)
    a, b, c = probe.run(loader), probe.run(loader), probe.run(loader, seed=1)
    assert torch.equal(a.batch_indices, b.batch_indices) and torch.equal(a.norms, b.norms)
    assert not torch.equal(a.batch_indices, c.batch_indices)
    # iid, not a partition: over 30 batches of 8 from 40 samples, some sample repeats
    # within every "pass" of 5 batches (a shuffled epoch never repeats one).
    passes = a.batch_indices.reshape(6, 40)
    assert any(len(set(p.tolist())) < 40 for p in passes)
    assert a.sketches is None and a.block_norms.numel() == 10  # m = 3 by default for K = 30


def _gradient_sized(d):
    """Floating tensors alive with at least d elements (gc-tracked tensors: all of them)."""
    gc.collect()
    with warnings.catch_warnings():  # isinstance() wakes deprecated lazy module attributes
        warnings.simplefilter("ignore")
        return [o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.is_floating_point() and o.numel() >= d]


def test_probe_keeps_no_per_batch_gradient():
    d_in, width, k, subset, b = 16, 64, 16, 48, 8
    model = nn.Sequential(nn.Linear(d_in, width), nn.Tanh(), nn.Linear(width, 1))
    d = sum(p.numel() for p in model.parameters())  # 1153 > every data tensor
    x, y = torch.randn(subset, d_in), torch.randn(subset, 1)
    calls, live = [0], []

    def loss(batch):
        calls[0] += 1
        # gc is slow: look twice, mid-way and at the end of the noise pass (after the
        # subset // b full-gradient batches). Storing K gradients would show K tensors.
        if calls[0] in (subset // b + k // 2, subset // b + k):
            live.append(len(_gradient_sized(d)))
        return F.mse_loss(model(batch[0]), batch[1])

    p = 8
    before = {id(t) for t in _gradient_sized(d)}  # other tests' leftovers, if any
    res = GradientNoiseProbe(model, loss, num_batches=k, sketch_dim=p).run(
        DataLoader(TensorDataset(x, y), batch_size=b)
    )
    live = [n - len(before) for n in live]
    assert live == [5, 5]  # full gradient, current and previous noise, pair difference, block sum
    # five float32 buffers + int32 index + K norms, K sketches, bins: O(D + K·p), not O(K·D)
    assert res.state_bytes <= 6 * 4 * d + k * (p + 2) * 8 + 2 * p * 4
    assert res.state_bytes < k * d * 4 / 2
    assert {id(t) for t in _gradient_sized(d)} <= before  # and all of it is freed afterwards


def test_probe_restores_modes_buffers_grads_and_rng():
    torch.manual_seed(0)
    model = _Net()
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    model.train()
    model(x).sum().backward()  # existing grads and BatchNorm statistics to preserve
    model.body[1].eval()  # a mixed-mode model (frozen BatchNorm)
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    grads = {k: v.grad.clone() for k, v in model.named_parameters() if v.grad is not None}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    modes = {k: m.training for k, m in model.named_modules()}
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(5)
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())

    res = GradientNoiseProbe(model, lambda b: F.cross_entropy(model(b[0]), b[1]), num_batches=8, sketch_dim=32).run(
        DataLoader(TensorDataset(x, y), batch_size=8)
    )

    assert res.norms.shape == (8,) and torch.isfinite(res.norms).all()
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k])
        assert (v.grad is None) == (k not in grads) and (v.grad is None or torch.equal(v.grad, grads[k]))
    for k, v in model.named_buffers():
        assert torch.equal(v, buffers[k]), k  # running stats and num_batches_tracked
    assert {k: m.training for k, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert random.getstate() == rng[1] and np.array_equal(np.random.get_state()[1], rng[2])


def test_probe_modes_differ_and_arguments_are_validated():
    model = _Net()
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    loss = lambda b: F.cross_entropy(model(b[0]), b[1])  # noqa: E731
    train = GradientNoiseProbe(model, loss, num_batches=8, mode="train").run(loader)
    evald = GradientNoiseProbe(model, loss, num_batches=8, mode="eval").run(loader)
    assert not torch.allclose(train.norms, evald.norms)  # batch statistics + dropout vs not
    for kwargs, match in [({"num_batches": 3}, "num_batches"), ({"mode": "test"}, "mode"),
                          ({"sketch_dim": -1}, "sketch_dim"), ({"dtype": torch.float16}, "dtype")]:
        with pytest.raises(ValueError, match=match):
            GradientNoiseProbe(model, loss, **kwargs)
    with pytest.raises(ValueError, match="subset"):
        GradientNoiseProbe(model, loss, batch_size=64).run(loader)
    with pytest.raises(ValueError, match="scalar"):
        GradientNoiseProbe(model, lambda b: model(b[0])).run(loader)


def test_distributed_gather_path_world_size_one(tmp_path):
    model, x, y = _regression()
    probe, loader = _mse_probe(model, x, y, num_batches=12, sketch_dim=8, seed=2)
    local = probe.run(loader)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gathered = probe.run(loader)  # all_reduce / all_gather with one rank
    finally:
        dist.destroy_process_group()
    assert gathered.world_size == 1
    for name in ("norms", "sketches", "block_norms", "batch_indices"):
        torch.testing.assert_close(getattr(gathered, name), getattr(local, name), rtol=1e-12, atol=0)
    assert gathered.full_grad_norm == pytest.approx(local.full_grad_norm, rel=1e-12)
    assert gathered.trace_sq == pytest.approx(local.trace_sq, rel=1e-12)


# A fresh interpreter per rank that imports only torch and the probe: spawning this
# test module instead would import Lightning and matplotlib in every child (~20 s).
_DDP_WORKER = """
import sys, torch, torch.distributed as dist
from torch.nn import Linear, functional as F
from torch.utils.data import DataLoader, TensorDataset
from benchmark.noise.probe import GradientNoiseProbe
rank, world, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world)
gen = torch.Generator().manual_seed(0)
x = torch.randn(64, 5, dtype=torch.float64, generator=gen)
y = x @ torch.randn(5, 1, dtype=torch.float64, generator=gen) + 0.3 * torch.randn(64, 1, dtype=torch.float64, generator=gen)
torch.manual_seed(0)
model = Linear(5, 1).double()
probe = GradientNoiseProbe(model, lambda b: F.mse_loss(model(b[0]), b[1]), dtype=torch.float64,
                           num_batches=21, sketch_dim=8, block_size=3, seed=4)
res = probe.run(DataLoader(TensorDataset(x, y), batch_size=8))
torch.save(vars(res), out)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_two_process_ddp_matches_direct_computation(tmp_path):
    store, outs = tmp_path / "store", [tmp_path / f"rank{r}.pt" for r in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", _DDP_WORKER, str(r), "2", str(store), str(outs[r])],
                         cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True)
        for r in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-2000:]
    results = {r: {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in torch.load(outs[r]).items()}
               for r in range(2)}
    a, b = results[0], results[1]
    for key in ("norms", "sketches", "block_norms", "batch_indices", "full_grad_norm", "trace_sq"):
        np.testing.assert_array_equal(a[key], b[key])  # every rank holds the whole result
    assert a["world_size"] == 2 and a["norms"].shape == (22,)  # K = 21 rounded up to 2 x 11

    torch.manual_seed(0)
    model, x, y = _regression()
    per_sample = _per_sample_grads(model, x, y)
    full = per_sample.mean(0)
    assert a["full_grad_norm"] == pytest.approx(float(full.norm()), rel=1e-12)  # all-reduced
    noise = per_sample[torch.from_numpy(a["batch_indices"])].mean(1) - full
    np.testing.assert_allclose(a["norms"], noise.norm(dim=1).numpy(), rtol=1e-10)
    # 3 blocks of 3 per rank, reordered so that block j is norms[3j:3j+3] as with one process
    ref = ProbeResult.from_noise(noise, sketch_dim=8, block_size=3)
    assert a["block_norms"].shape == (6,)
    np.testing.assert_allclose(a["block_norms"], ref.block_norms[:6].numpy(), rtol=1e-10)
    np.testing.assert_allclose(a["sketches"], ref.sketches.numpy(), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ the callback
class _Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = _Net()

    def compute_loss(self, batch):
        return F.cross_entropy(self.net(batch[0]), batch[1])

    def training_step(self, batch, batch_idx):
        return self.compute_loss(batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


class _Data(pl.LightningDataModule):
    def __init__(self, batch_size=8):
        super().__init__()
        self.batch_size = batch_size
        gen = torch.Generator().manual_seed(42)
        self.x, self.y = torch.randn(96, 6, generator=gen), torch.randint(0, 3, (96,), generator=gen)

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x[:32], self.y[:32]), batch_size=self.batch_size, shuffle=True)

    def probe_dataloader(self, num_samples, batch_size, shuffle=False, seed=0):
        subset = TensorDataset(self.x[:num_samples], self.y[:num_samples])
        return DataLoader(subset, batch_size=batch_size, shuffle=shuffle,
                          generator=torch.Generator().manual_seed(seed))


class _Recorder(Logger):
    def __init__(self):
        super().__init__()
        self.rows = []

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


def _fit(tmp_path, callbacks, logger=False):
    pl.seed_everything(7, workers=True)
    module = _Module()
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, deterministic=True, log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=_Data())
    return module


def test_callback_does_not_change_training_and_logs(tmp_path):
    baseline = _fit(tmp_path / "plain", [])
    recorder = _Recorder()
    callback = GradientNoiseCallback(every_n_steps=3, num_samples=64, num_batches=8, sketch_dim=32,
                                     task="tiny", output_dir=tmp_path / "noise", num_bootstrap=50)
    probed = _fit(tmp_path / "probed", [callback], logger=recorder)

    for (k, a), (_, b) in zip(baseline.state_dict().items(), probed.state_dict().items()):
        assert torch.equal(a, b), k  # weights, BatchNorm statistics: bit-identical
    assert [s.step for s in callback.history] == [0, 3, 6]  # at start, then every 3 steps
    logged = [(step, row) for step, row in recorder.rows if "noise/alpha" in row]
    assert [step for step, _ in logged] == [0, 3, 6]
    assert {"noise/alpha_low", "noise/alpha_high", "noise/hill", "noise/kurtosis", "noise/max_median",
            "noise/time_s"} <= set(logged[0][1])
    out = tmp_path / "noise"
    assert (out / "tiny_step3_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tiny_step6_qq.png").exists() and (out / "alpha_trajectory.png").exists()
    assert "| tiny | 6 |" in (out / "noise_table.md").read_text()
    lines = (out / "noise_summaries.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [0, 3, 6]


def test_callback_with_disabled_wandb_and_bad_setup(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "disabled")
    callback = GradientNoiseCallback(every_n_steps=0, num_samples=64, num_batches=8, sketch_dim=16,
                                     output_dir=tmp_path / "noise", num_bootstrap=20)
    _fit(tmp_path, [callback], logger=WandbLogger(save_dir=str(tmp_path), mode="disabled"))
    assert len(callback.history) == 1  # W&B disabled: the images are skipped, nothing fails

    class NoProbe(_Data):
        probe_dataloader = None

    trainer = pl.Trainer(max_steps=1, logger=False, callbacks=[GradientNoiseCallback()],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with pytest.raises(Exception, match="probe_dataloader"):
        trainer.fit(_Module(), datamodule=NoProbe())
    with pytest.raises(ValueError, match="mode"):
        GradientNoiseCallback(mode="bogus")


# ------------------------------------------------------------------ plots and table
def test_plots_and_table(tmp_path):
    from scipy import stats

    gen = torch.Generator().manual_seed(0)
    gauss = summarize(ProbeResult.from_noise(torch.randn(50, 300, generator=gen)), task="gauss", step=0)
    heavy_noise = torch.from_numpy(stats.levy_stable.rvs(1.3, 0, size=(50, 300), random_state=np.random.default_rng(0)))
    heavy = summarize(ProbeResult.from_noise(heavy_noise), task="heavy", step=10)
    for s in (gauss, heavy):  # linear and log axes
        paths = save_plots(s, tmp_path)
        for path in paths.values():
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert (tmp_path / "heavy_step10_qq.png").exists()
    traj = plot_alpha_trajectory([gauss, heavy], tmp_path / "traj.png")
    assert traj.read_bytes()[:4] == b"\x89PNG"
    table = markdown_table([gauss, heavy])
    lines = table.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| task | step | K | α [95% CI]")
    assert lines[2].startswith("| gauss | 0 | 50 | 2.00 [") and lines[2].count("| no |") == 1
    assert lines[3].startswith("| heavy | 10 |") and "| yes |" in lines[3]
    text = write_table([gauss, heavy], tmp_path / "t" / "noise.md").read_text()
    assert text.startswith(table) and "heavy-tailed = upper end of the α interval < 1.9" in text

    # the results folder round trip that `make noise` / `make bench` rely on
    later = summarize(ProbeResult.from_noise(heavy_noise * 2), task="gauss", step=5)
    paths = write_report([gauss, heavy, later], tmp_path / "results")
    back = read_summaries(tmp_path / "results")
    dump = lambda rows: [json.dumps(s.to_dict()) for s in rows]  # noqa: E731 - NaN != NaN in dicts
    assert dump(back) == dump([gauss, heavy, later])
    assert markdown_table(back) in paths["table"].read_text()
    lines = verdict_lines(back)
    assert lines[0].startswith("gauss: heavy-tailed: yes at step 5 (α ") and "over steps 0 → 5" in lines[0]
    assert lines[1].startswith("heavy: heavy-tailed: yes at step 10")
