"""The probe across noise batch sizes, and on a sequence model with integer token batches.

The language-model checks use a tiny causal next-token model of their own (an embedding
and a linear head on random tokens) wrapped in a LightningModule that has no
``compute_loss``: the probe must work from what ``training_step`` returns.
"""

from __future__ import annotations

import copy
import csv
import json

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import Logger
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmark.noise import (
    GradientNoiseCallback,
    GradientNoiseProbe,
    ProbeResult,
    summarize,
)
from benchmark.noise.callback import loss_function
from benchmark.noise.plots import markdown_table
from benchmark.noise.report import read_summaries, verdict_lines, write_report
from benchmark.noise.runner import ProbeSettings, noise_batch_sizes

VOCAB, SEQ = 11, 6


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _TinyLM(pl.LightningModule):
    """Next-token prediction: logits = head(embed(token)); batches are (N, SEQ + 1) int64."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.head = nn.Linear(width, VOCAB)

    def training_step(self, batch, batch_idx):
        (tokens,) = batch
        logits = self.head(self.embed(tokens[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
        self.log("train/loss", loss)  # silenced inside the probe, live in training
        return {"loss": loss}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


class _Tokens(pl.LightningDataModule):
    def __init__(self, batch_size: int = 4):
        super().__init__()
        self.batch_size = batch_size
        self.tokens = torch.randint(0, VOCAB, (48, SEQ + 1), generator=torch.Generator().manual_seed(3))

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.tokens[:24]), batch_size=self.batch_size, shuffle=True)

    def probe_dataloader(self, num_samples, batch_size, shuffle=False, seed=0):
        return DataLoader(TensorDataset(self.tokens[:num_samples]), batch_size=batch_size, shuffle=shuffle)


def _flat_grad(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The float64 gradient of the mean next-token cross-entropy, written out directly."""
    logits = model.head(model.embed(tokens[:, :-1]))
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), tokens[:, 1:].reshape(-1))
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(model.parameters()))])


def test_probe_on_integer_token_batches_matches_direct_computation():
    torch.manual_seed(0)
    module = _TinyLM()
    data = _Tokens()
    loader = data.probe_dataloader(24, 4)
    assert loader.dataset[0][0].dtype == torch.int64
    res = GradientNoiseProbe(module, loss_function(module), num_batches=10, sketch_dim=16).run(loader)

    ref = copy.deepcopy(module).double()
    subset = data.tokens[:24]
    full = _flat_grad(ref, subset)  # every sequence has SEQ targets: the batch means average to this
    expected = torch.stack([(_flat_grad(ref, subset[idx]) - full).norm() for idx in res.batch_indices])
    torch.testing.assert_close(res.norms, expected, rtol=2e-5, atol=1e-7)
    assert res.full_grad_norm == pytest.approx(float(full.norm()), rel=2e-5)
    assert res.batch_size == 4 and res.num_params == sum(p.numel() for p in module.parameters())
    assert summarize(res, task="lm", step=0).alpha is not None


def test_loss_function_prefers_compute_loss_and_reads_training_step_otherwise():
    module = _TinyLM()
    batch = (torch.randint(0, VOCAB, (3, SEQ + 1)),)
    loss = loss_function(module)(batch)  # outside any fit: self.log must be silenced, not raise
    assert loss.dim() == 0 and loss.requires_grad
    assert "log" not in vars(module)  # the instance's logging is restored afterwards

    class WithComputeLoss(_TinyLM):
        def compute_loss(self, batch):
            return torch.tensor(1.5)

    other = WithComputeLoss()
    assert float(loss_function(other)(batch)) == 1.5


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


def _fit(root, callbacks, logger=False):
    pl.seed_everything(5, workers=True)
    module = _TinyLM()
    trainer = pl.Trainer(
        max_steps=4, accelerator="cpu", devices=1, logger=logger, callbacks=callbacks, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=root, deterministic=True,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=_Tokens())
    return module


def test_callback_probes_every_batch_size_of_a_language_model_without_changing_training(tmp_path):
    baseline = _fit(tmp_path / "plain", [])
    recorder = _Recorder()
    callback = GradientNoiseCallback(every_n_steps=2, at_end=True, num_samples=16, batch_sizes=[4, 2], num_batches=8,
                                     sketch_dim=16, task="lm", output_dir=tmp_path / "noise", num_bootstrap=20)
    probed = _fit(tmp_path / "probed", [callback], logger=recorder)

    for (k, a), (_, b) in zip(baseline.state_dict().items(), probed.state_dict().items()):
        assert torch.equal(a, b), k
    assert [(s.step, s.batch_size) for s in callback.history] == [(0, 2), (0, 4), (2, 2), (2, 4), (4, 2), (4, 4)]
    noise_rows = [(step, row) for step, row in recorder.rows if any(k.startswith("noise/") for k in row)]
    assert [step for step, _ in noise_rows] == [0, 0, 2, 2, 4, 4]
    assert {"noise/b2/alpha", "noise/b2/batch_size"} <= set(noise_rows[0][1])
    assert noise_rows[1][1]["noise/b4/batch_size"] == 4.0 and "noise/alpha" not in noise_rows[1][1]
    assert any("train/loss" in row for _, row in recorder.rows)  # training_step's own logging still works
    out = tmp_path / "noise"
    for b in (2, 4):
        assert (out / f"lm_b{b}_step2_hist.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / f"lm_b{b}_step4_qq.png").is_file()
    rows = [line for line in (out / "noise_table.md").read_text().splitlines() if line.startswith("| lm |")]
    # sorted by batch size, then step; column 5 is the batch size
    assert [(r.split("|")[2].strip(), r.split("|")[5].strip()) for r in rows] == [
        ("0", "2"), ("2", "2"), ("4", "2"), ("0", "4"), ("2", "4"), ("4", "4")]


def test_callback_rejects_conflicting_or_empty_batch_sizes():
    with pytest.raises(ValueError, match="batch_size or batch_sizes"):
        GradientNoiseCallback(batch_size=4, batch_sizes=[2, 4])
    with pytest.raises(ValueError, match="batch_sizes"):
        GradientNoiseCallback(batch_sizes=[])
    with pytest.raises(ValueError, match="batch_sizes"):
        GradientNoiseCallback(batch_sizes=[0, 4])


@pytest.mark.parametrize(
    "train, settings, task, expected",
    [
        (32, {}, None, (8, 32)),  # ImageNet's embedded batch: b/4 and b
        (8, {}, None, (2, 8)),  # VOC, DIV2K
        (6, {}, None, (2, 6)),  # 6 // 4 = 1, floored at 2
        (2, {}, None, (2,)),
        (1, {}, None, (1,)),  # never above the training batch
        (8, {"batch_divisors": (1,)}, None, (8,)),  # --quick
        (8, {}, (16, 4), (4, 16)),  # a ProbeTarget's own sizes
        (8, {"batch_size": 5}, (16, 4), (5,)),  # --batch-size wins over the target
        (8, {"batch_sizes": (4, 2, 4)}, (16,), (2, 4)),  # --batch-sizes wins, sorted, unique
    ],
)
def test_noise_batch_sizes_rule(train, settings, task, expected):
    assert noise_batch_sizes(train, ProbeSettings(**settings), task) == expected


def _probe(noise, task, step, b):
    return summarize(ProbeResult.from_noise(noise, batch_size=b, sketch_dim=50), task=task, step=step, num_bootstrap=20)


def test_table_csv_verdicts_and_plots_per_task_batch_size_and_step(tmp_path):
    gen = torch.Generator().manual_seed(1)
    rows = [_probe(torch.randn(20, 60, generator=gen), "lm", step, b) for b in (4, 16) for step in (0, 30)]
    rows.append(_probe(torch.randn(20, 60, generator=gen), "voc", 0, 8))
    table = markdown_table(rows).splitlines()
    assert table[0].split("|")[5].strip() == "batch size" and table[0].split("|")[9].strip() == "heavy-tailed"
    assert [line.split("|")[5].strip() for line in table[2:]] == ["4", "4", "16", "16", "8"]

    paths = write_report(rows, tmp_path)
    with open(paths["csv"], newline="") as f:
        records = list(csv.DictReader(f))
    assert [(r["task"], r["batch_size"], r["step"]) for r in records] == [
        ("lm", "4", "0"), ("lm", "4", "30"), ("lm", "16", "0"), ("lm", "16", "30"), ("voc", "8", "0")]
    assert float(records[0]["alpha_low"]) <= float(records[0]["alpha"]) <= float(records[0]["alpha_high"])
    assert records[0]["heavy_tailed"] in ("True", "False")
    # a task probed at several batch sizes gets the size in its file names; one probed at one does not
    assert (tmp_path / "lm_b16_step30_hist.png").is_file() and (tmp_path / "voc_step0_qq.png").is_file()
    assert not (tmp_path / "lm_step0_hist.png").exists()

    lines = verdict_lines(read_summaries(tmp_path))
    assert [line.split(":")[0] for line in lines] == ["lm", "lm", "voc"]
    assert "with batch size 4; α" in lines[0] and "over steps 0 → 30" in lines[0]
    assert "with batch size 16" in lines[1] and lines[2].endswith("with batch size 8")
    assert json.loads(paths["summaries"].read_text().splitlines()[2])["batch_size"] == 16
