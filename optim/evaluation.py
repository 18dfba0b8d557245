"""The evaluation point of any optimizer, and swapping a model onto it and back."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = ["EvaluationPointSwap", "evaluation_point", "evaluation_point_pairs"]


def evaluation_point(optimizer: Optimizer) -> list[Tensor]:
    """One tensor per parameter, in param_groups order: where theory evaluates the method.

    Clipped-SSTM's y, averaged clipped-SGD's x̄; the parameters themselves for every
    optimizer that does not define ``evaluation_point()`` (SGD, Adam, ...).
    """
    method = getattr(optimizer, "evaluation_point", None)
    if callable(method):
        return method()
    return [p for group in optimizer.param_groups for p in group["params"]]


def evaluation_point_pairs(optimizers: Iterable[Optimizer]) -> list[tuple[Tensor, Tensor]]:
    """``(parameter, evaluation point)`` for every parameter whose evaluation point is another tensor.

    Empty for SGD, Adam and the like, and for clipped-SSTM / averaged clipped-SGD before
    their first step. The evaluation point may be kept in another dtype than the
    parameter (a float32 accumulator of a bf16 parameter); copying it into the
    parameter casts it.

    Args:
        optimizers: the optimizers whose parameters to pair.

    Returns:
        The pairs, in param_groups order.
    """
    pairs = []
    for optimizer in optimizers:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        pairs.extend((p, e) for p, e in zip(params, evaluation_point(optimizer)) if e is not p)
    return pairs


class EvaluationPointSwap:
    """Put the evaluation point into the parameters, and the parameters back, bit-exactly.

    Usable as a context manager or through :meth:`swap_in` / :meth:`swap_out` (Lightning
    hooks call them at the start and end of validation). Only parameters whose evaluation
    point is another tensor are copied; the backup costs one copy of those.

    Example::

        with EvaluationPointSwap([optimizer]):
            evaluate(model)
    """

    def __init__(self, optimizers: Iterable[Optimizer]) -> None:
        self.optimizers = list(optimizers)
        self._backup: list[tuple[Tensor, Tensor]] | None = None

    @property
    def active(self) -> bool:
        """True between :meth:`swap_in` and :meth:`swap_out`."""
        return self._backup is not None

    @torch.no_grad()
    def swap_in(self) -> None:
        if self._backup is not None:
            raise RuntimeError("EvaluationPointSwap.swap_in called twice without swap_out")
        backup = []
        for optimizer in self.optimizers:
            params = [p for group in optimizer.param_groups for p in group["params"]]
            for p, e in zip(params, evaluation_point(optimizer)):
                if e is not p:
                    backup.append((p, p.detach().clone(memory_format=torch.preserve_format)))
                    p.copy_(e)
        self._backup = backup

    @torch.no_grad()
    def swap_out(self) -> None:
        if self._backup is None:
            raise RuntimeError("EvaluationPointSwap.swap_out called without swap_in")
        for p, saved in self._backup:
            p.copy_(saved)
        self._backup = None

    def __enter__(self) -> "EvaluationPointSwap":
        self.swap_in()
        return self

    def __exit__(self, *exc) -> None:
        self.swap_out()
