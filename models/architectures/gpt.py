"""A GPT-style decoder-only Transformer for byte-level language modelling.

Pre-LayerNorm blocks (Radford et al. 2019, GPT-2; Xiong et al. 2020), causal
self-attention through :func:`torch.nn.functional.scaled_dot_product_attention`
(``is_causal=True``: the fused kernels on every backend), learned absolute positions
and an output projection tied to the token embedding (Press & Wolf 2017). GPT-2's
initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layer).

References:
    Radford et al., "Language Models are Unsupervised Multitask Learners", 2019.
    Xiong et al., "On Layer Normalization in the Transformer Architecture", ICML 2020.
    Press & Wolf, "Using the Output Embedding to Improve Language Models", EACL 2017.
    Karpathy, nanoGPT (github.com/karpathy/nanoGPT), model.py, 2023.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GPT"]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends to positions <= t."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)
        # [B, T, C] -> [B, heads, T, C / heads]
        q, k, v = (t.view(batch, length, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(batch, length, width)))


class Block(nn.Module):
    """``x + attn(ln(x))``, then ``x + mlp(ln(x))`` (pre-LayerNorm)."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=bias)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model, bias=bias),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only Transformer: token ids ``[B, T]`` -> next-token logits ``[B, T, vocab_size]``.

    Args:
        vocab_size: number of token values (256 for bytes).
        block_size: the longest context (number of learned positions).
        n_layer: Transformer blocks.
        n_head: attention heads (must divide ``d_model``).
        d_model: residual stream width.
        dropout: on attention weights, residual branches and embeddings (0: off).
        bias: biases in the linear layers and LayerNorms (GPT-2 has them).

    Raises:
        ValueError: a size is not positive, ``n_head`` does not divide ``d_model``, or
            ``dropout`` is outside [0, 1).
    """

    def __init__(
        self,
        vocab_size: int = 256,
        block_size: int = 256,
        n_layer: int = 6,
        n_head: int = 8,
        d_model: int = 512,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size), ("n_layer", n_layer),
                            ("n_head", n_head), ("d_model", d_model)):  # fmt: skip
            if value < 1:
                raise ValueError(f"Invalid {name}: {value} (must be >= 1)")
        if d_model % n_head:
            raise ValueError(f"Invalid n_head: {n_head} (must divide d_model={d_model})")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Invalid dropout: {dropout} (must be in [0, 1))")
        self.block_size = block_size
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(block_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(d_model, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight  # tied: one matrix, two uses
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits of the next token at every position.

        Raises:
            ValueError: the sequence is longer than ``block_size``.
        """
        length = tokens.shape[1]
        if length > self.block_size:
            raise ValueError(f"Invalid sequence length: {length} (must be <= block_size={self.block_size})")
        positions = torch.arange(length, device=tokens.device)
        x = self.dropout(self.token_embedding(tokens) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
