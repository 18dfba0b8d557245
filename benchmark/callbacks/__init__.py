"""Lightning callbacks of the runner."""

from .evaluation_point import EvaluationPointCallback
from .optimizer_stats import OptimizerStatsCallback
from .rng_state import RNGStateCallback
from .run_summary import RunSummaryCallback
from .slurm_requeue import SlurmRequeueCallback

__all__ = ["EvaluationPointCallback", "OptimizerStatsCallback", "RNGStateCallback", "RunSummaryCallback", "SlurmRequeueCallback"]
