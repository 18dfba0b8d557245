"""Clipping optimizers and the optimizer registry.

>>> from optim import ClippedSGD, ClippedSSTM, build_optimizer
>>> opt = build_optimizer("sgd", params, clip_policy="zclip", lr=0.1)  # a policy in front of any entry
"""

from .base import ClippedOptimizer
from .clipped_adam import ClippedAdam
from .clipped_sgd import ClippedSGD, clipped_sgd
from .clipped_sstm import ClippedSSTM, clipped_sstm, sstm_schedule
from .evaluation import EvaluationPointSwap, evaluation_point
from .muon import MuonAdamW
from .nsgdm import NSGDM
from .policies import AGC, AutoClip, ClipPolicy, ZClip, make_policy
from .policy_optimizer import ClipPolicyOptimizer
from .factory import (
    ENTRY_POINT_GROUP,
    OptimizerSpec,
    build_optimizer,
    get_optimizer_spec,
    list_optimizers,
    register_optimizer,
)

__all__ = [
    "AGC",
    "ENTRY_POINT_GROUP",
    "AutoClip",
    "ClipPolicy",
    "ClipPolicyOptimizer",
    "ClippedAdam",
    "ClippedOptimizer",
    "ClippedSGD",
    "ClippedSSTM",
    "EvaluationPointSwap",
    "MuonAdamW",
    "NSGDM",
    "OptimizerSpec",
    "build_optimizer",
    "clipped_sgd",
    "clipped_sstm",
    "evaluation_point",
    "get_optimizer_spec",
    "list_optimizers",
    "make_policy",
    "register_optimizer",
    "sstm_schedule",
    "ZClip",
]
