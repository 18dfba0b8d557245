"""Lightning callbacks of the runner."""

from .optimizer_stats import OptimizerStatsCallback
from .run_summary import RunSummaryCallback

__all__ = ["OptimizerStatsCallback", "RunSummaryCallback"]
