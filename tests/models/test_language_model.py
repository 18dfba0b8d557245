"""The GPT decoder against a hand-written attention, and the language-model task: bits per
character, parameter groups, training with every optimizer, the evaluation point."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from benchmark.callbacks import EvaluationPointCallback
from datamodules import TextDataModule
from models import LanguageModelTask, parameter_groups
from models.architectures import GPT, build_architecture
from optim import ClippedSSTM, evaluation_point, list_optimizers

TINY = {"n_layer": 2, "n_head": 2, "d_model": 16}
TEXT = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 40


def _reference_attention(attn, x: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d_head) + causal mask) v, in float64, head by head."""
    x = x.double()
    w, b = attn.qkv.weight.double(), attn.qkv.bias.double()
    batch, length, width = x.shape
    heads, d = attn.n_head, width // attn.n_head
    q, k, v = (x @ w.T + b).split(width, dim=2)
    out = torch.zeros(batch, length, width, dtype=torch.float64)
    mask = torch.full((length, length), -math.inf, dtype=torch.float64).triu(1)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d) + mask
        out[..., cols] = scores.softmax(-1) @ v[..., cols]
    return out @ attn.proj.weight.double().T + attn.proj.bias.double()


def test_attention_equals_the_hand_written_causal_attention():
    torch.manual_seed(0)
    net = GPT(vocab_size=11, block_size=7, **TINY).eval()
    x = torch.randn(3, 7, 16)
    attn = net.blocks[0].attn
    torch.testing.assert_close(attn(x).double(), _reference_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_logits_at_t_do_not_depend_on_later_tokens():
    torch.manual_seed(0)
    net = GPT(vocab_size=11, block_size=9, **TINY).eval()
    tokens = torch.randint(0, 11, (2, 9))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 3) % 11
    a, b = net(tokens), net(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])
    assert a.shape == (2, 9, 11)


def test_output_projection_is_tied_to_the_embedding():
    net = build_architecture("gpt", vocab_size=11, block_size=4, **TINY)
    assert net.head.weight is net.token_embedding.weight
    # One matrix in the parameter list, not two.
    assert sum(p is net.token_embedding.weight for p in net.parameters()) == 1


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_head": 3}, "Invalid n_head: 3 \\(must divide d_model=16\\)"),
    ({"dropout": 1.0}, "Invalid dropout: 1.0"),
    ({"n_layer": 0}, "Invalid n_layer: 0"),
])  # fmt: skip
def test_gpt_rejects_bad_sizes(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPT(**{"vocab_size": 11, "block_size": 4, **TINY, **kwargs})


def test_gpt_rejects_a_sequence_longer_than_its_context():
    with pytest.raises(ValueError, match="Invalid sequence length: 5 \\(must be <= block_size=4\\)"):
        GPT(vocab_size=11, block_size=4, **TINY)(torch.zeros(1, 5, dtype=torch.long))


def test_no_weight_decay_on_embeddings_norms_and_biases():
    net = GPT(vocab_size=11, block_size=4, **TINY)
    decay, no_decay = parameter_groups(net, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    exempt = {id(p) for p in no_decay["params"]}
    names = {id(p): n for n, p in net.named_parameters()}
    assert {names[i] for i in exempt} == {
        n for n, p in net.named_parameters() if p.ndim == 1 or n.endswith("_embedding.weight")
    }
    assert id(net.token_embedding.weight) in exempt and id(net.position_embedding.weight) in exempt
    assert all(names[id(p)].endswith("weight") and p.ndim == 2 for p in decay["params"])
    (everything,) = parameter_groups(net, 0.1, decay_norm_and_bias=True)
    assert len(everything["params"]) == len(list(net.parameters()))


# ------------------------------------------------------------------------------ the task
@pytest.fixture
def text_data(tmp_path):
    path = tmp_path / "sonnet.txt"
    path.write_text(TEXT)
    return lambda **kw: TextDataModule(data_dir=str(path), **{"seq_len": 16, "batch_size": 4, "val_batch_size": 7, "val_fraction": 0.2, **kw})


def _trainer(tmp_path, **kwargs):
    defaults = dict(
        accelerator="cpu", max_steps=3, limit_train_batches=3, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )  # fmt: skip
    callbacks = [EvaluationPointCallback(), *kwargs.pop("callbacks", ())]
    return pl.Trainer(**{**defaults, **kwargs}, callbacks=callbacks)


def _model(optimizer="adam", **kwargs):
    return LanguageModelTask(block_size=16, arch_args=TINY, optimizer=optimizer, init_seed=0, **kwargs)


def test_val_bpc_is_the_mean_cross_entropy_over_every_byte_in_bits(text_data, tmp_path):
    data, model = text_data(), _model()
    trainer = _trainer(tmp_path)
    trainer.validate(model, datamodule=data, verbose=False)
    # Reference: every validation window's every target byte, one at a time, in float64
    # (7 does not divide the number of windows: the last batch is smaller).
    assert len(data.val_dataset) % 7 != 0
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(data.val_dataset)):
            x, y = data.val_dataset[i]
            logp = model.net(x[None])[0].double().log_softmax(-1)
            total -= logp.gather(1, y[:, None]).sum().item()
            count += y.numel()
    metrics = trainer.callback_metrics
    assert metrics["val/loss"].item() == pytest.approx(total / count, rel=1e-5)
    assert metrics["val/bpc"].item() == pytest.approx(total / count / math.log(2), rel=1e-5)
    # Untrained: close to the uniform distribution over 256 bytes, 8 bits.
    assert 7.5 < metrics["val/bpc"].item() < 8.5


@pytest.mark.parametrize("optimizer", list_optimizers())
def test_every_optimizer_trains_the_language_model(optimizer, text_data, tmp_path):
    pl.seed_everything(0, verbose=False)
    model = _model(optimizer)
    trainer = _trainer(tmp_path, limit_val_batches=2)
    trainer.fit(model, datamodule=text_data())
    assert trainer.global_step == 3
    assert model.primary_metric == "val/bpc"
    bpc = trainer.callback_metrics["val/bpc"]
    assert torch.isfinite(bpc) and bpc < 8.5
    assert all(torch.isfinite(p).all() for p in model.parameters())
    start = _model(optimizer)  # same init_seed: the starting point
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), start.parameters()))


def test_validation_reads_the_evaluation_point(text_data, tmp_path):
    seen = []

    class Recorder(pl.Callback):
        def on_validation_batch_start(self, trainer, pl_module, *args):
            seen.append([p.detach().clone() for p in pl_module.net.parameters()])

    model = _model("clipped_sstm")
    trainer = _trainer(tmp_path, callbacks=[Recorder()], limit_val_batches=1)
    trainer.fit(model, datamodule=text_data())
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, ClippedSSTM)
    y, x = evaluation_point(optimizer), list(model.net.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(x, y))
    assert all(torch.equal(a, b) for a, b in zip(seen[-1], y))
    assert trainer.callback_metrics["val/evaluate_at_evaluation_point"] == 1.0


def test_training_lowers_the_bits_per_character(text_data, tmp_path):
    """From about 8 bits (uniform over 256 bytes) to below 5 (the 82-byte sentence this
    text repeats has a unigram entropy of 3.96 bits) in 60 Adam steps."""
    pl.seed_everything(0, verbose=False)
    model = _model("adam", optimizer_args={"lr": 1e-2})
    trainer = _trainer(tmp_path, max_steps=60, max_epochs=-1, limit_train_batches=30, limit_val_batches=2)
    trainer.fit(model, datamodule=text_data())
    assert trainer.callback_metrics["val/bpc"] < 5.0
