"""Byte-level language modelling (a GPT-style decoder on text): cross-entropy, bits per character."""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric

from .architectures import build_architecture
from .base import TaskModule

__all__ = ["LanguageModelTask"]


class LanguageModelTask(TaskModule):
    """Next-byte prediction with cross-entropy on contiguous sequences.

    Batches are ``(inputs, targets)``, both int64 ``[B, T]`` with ``targets`` the inputs
    shifted by one byte. Logs ``train/loss`` (nats per byte), ``val/loss`` and ``val/bpc``
    = loss / ln 2, bits per character: for byte-level models the usual name of bits per
    byte (enwik8's figures), equal to bits per character on ASCII text. Both are
    torchmetrics ``MeanMetric``s weighted by the number of predicted bytes, so the value
    is the exact mean over the validation set under DDP too. Lower is better.

    Args:
        vocab_size: token values (256: bytes; the CLI config sets the DataModule's).
        block_size: the model's longest context (at least the DataModule's ``seq_len``).
        arch, arch_args: the network (``gpt`` by default) and its keyword arguments
            besides ``vocab_size`` and ``block_size`` (``n_layer``, ``n_head``,
            ``d_model``, ``dropout``, ``bias``).
        **kwargs: optimizer, schedule, evaluation point and speed options of
            :class:`~models.base.TaskModule`.

    References:
        Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (bpc on
        enwik8/Hutter prize); Al-Rfou et al., "Character-Level Language Modeling with
        Deeper Self-Attention", AAAI 2019.
    """

    task = "language_model"
    primary_metric = "val/bpc"

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 256,
        arch: str = "gpt",
        arch_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.vocab_size = vocab_size
        self.net = self._init_net(
            lambda: build_architecture(arch, vocab_size=vocab_size, block_size=block_size, **(arch_args or {}))
        )
        self.val_bpc = MeanMetric()
        self.test_bpc = MeanMetric()

    def _shared_step(self, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        inputs, targets = batch
        logits = self(inputs)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        return loss, logits, targets

    def _update_metrics(self, stage: str, preds: Tensor, targets: Tensor, batch: Any) -> None:
        if stage == "train":
            return
        # The batch's mean loss again (cheap next to the network), weighted by its bytes.
        loss = F.cross_entropy(preds.detach().reshape(-1, preds.shape[-1]).float(), targets.reshape(-1))
        bpc = getattr(self, f"{stage}_bpc")
        bpc.update(loss / math.log(2), weight=targets.numel())
        self.log(f"{stage}/bpc", bpc, on_step=False, on_epoch=True)
