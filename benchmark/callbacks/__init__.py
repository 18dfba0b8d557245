"""Lightning callbacks of the runner."""

from .optimizer_stats import OptimizerStatsCallback
from .rng_state import RNGStateCallback
from .run_summary import RunSummaryCallback
from .slurm_requeue import SlurmRequeueCallback

__all__ = ["OptimizerStatsCallback", "RNGStateCallback", "RunSummaryCallback", "SlurmRequeueCallback"]
