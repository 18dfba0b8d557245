"""Clipping optimizers and the optimizer registry.

>>> from optim import ClippedSGD, ClippedSSTM, build_optimizer
"""

from .base import ClippedOptimizer
from .clipped_sgd import ClippedSGD, clipped_sgd
from .clipped_sstm import ClippedSSTM, clipped_sstm, sstm_schedule
from .evaluation import EvaluationPointSwap, evaluation_point
from .factory import (
    ENTRY_POINT_GROUP,
    OptimizerSpec,
    build_optimizer,
    get_optimizer_spec,
    list_optimizers,
    register_optimizer,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ClippedOptimizer",
    "ClippedSGD",
    "ClippedSSTM",
    "EvaluationPointSwap",
    "OptimizerSpec",
    "build_optimizer",
    "clipped_sgd",
    "clipped_sstm",
    "evaluation_point",
    "get_optimizer_spec",
    "list_optimizers",
    "register_optimizer",
    "sstm_schedule",
]
