"""Lightning callbacks of the runner."""

from .optimizer_stats import OptimizerStatsCallback
from .rng_state import RNGStateCallback
from .run_summary import RunSummaryCallback

__all__ = ["OptimizerStatsCallback", "RNGStateCallback", "RunSummaryCallback"]
