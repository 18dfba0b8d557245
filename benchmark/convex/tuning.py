"""A small grid search per method, on seeds the reported runs never use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .experiment import Experiment
from .methods import BOUNDS, METHODS, check_methods
from .runner import ConvexProblemRun, Trajectory

__all__ = ["CRITERIA", "Sweep", "SweepResult"]

#: selection criteria: the quantile of f(output) − f* at the final N that is minimised
CRITERIA = {"q99": 0.99, "q90": 0.9, "median": 0.5}


@dataclass
class SweepResult:
    """The outcome of the sweep for one method.

    Attributes:
        best: the chosen hyperparameters.
        at_edge: the hyperparameter names whose chosen value is the smallest or largest
            of the grid (the optimum may lie outside it), unless that value is a bound of
            the method itself (:data:`~benchmark.convex.methods.BOUNDS`).
        grid: every grid point with its median and criterion value at the final N.
    """

    method: str
    criterion: str
    best: dict[str, float]
    at_edge: list[str]
    grid: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite values as strings)."""
        def clean(v: Any) -> Any:
            return v if not isinstance(v, float) or math.isfinite(v) else str(v)

        return {
            "method": self.method,
            "criterion": self.criterion,
            "best": {k: clean(v) for k, v in self.best.items()},
            "at_edge": self.at_edge,
            "grid": [{k: clean(v) for k, v in row.items()} for row in self.grid],
        }


class Sweep:
    """Grid search over each method's :meth:`~benchmark.convex.methods.Method.grid`.

    Every grid point runs ``runs`` runs of the full horizon N on the ``tune`` seed
    stream (disjoint from the reported runs), and the point with the smallest
    criterion (by default the 99% quantile of f(output) − f* at N: the high-probability
    quantity the theorems bound) wins; ties go to the smaller median.

    Args:
        experiment: what to tune on.
        methods: method names.
        runs: runs per grid point.
        seed: the base seed (the ``tune`` stream is derived from it).
        criterion: a key of :data:`CRITERIA`.

    Raises:
        ValueError: an unknown method or criterion.
    """

    def __init__(
        self, experiment: Experiment, methods: list[str], *, runs: int, seed: int, criterion: str = "q99"
    ) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"Invalid criterion: {criterion!r} (must be one of {', '.join(CRITERIA)})")
        check_methods(methods)
        self.experiment = experiment
        self.methods = list(methods)
        self.runs = runs
        self.seed = seed
        self.criterion = criterion

    def tasks(self) -> list[ConvexProblemRun]:
        """One task per (method, grid point)."""
        problem = self.experiment.build_problem()
        batch = float(self.experiment.batches(METHODS["sgd"]).mean())
        return [
            ConvexProblemRun(self.experiment, name, hparams, self.runs, self.seed, source="sweep", stream="tune")
            for name in self.methods
            for hparams in METHODS[name].grid(problem, batch)
        ]

    def select(self, trajectories: list[Trajectory]) -> dict[str, SweepResult]:
        """The best grid point of every method, from the trajectories of :meth:`tasks`."""
        prob = CRITERIA[self.criterion]
        results = {}
        for name in self.methods:
            runs = [t for t in trajectories if t.method == name]
            if not runs:
                continue
            best = min(runs, key=lambda t: (_key(t.final(prob)), _key(t.final(0.5))))
            keys = [k for k in best.hparams if len({t.hparams[k] for t in runs}) > 1]
            at_edge = []
            for k in keys:
                low, high = min(t.hparams[k] for t in runs), max(t.hparams[k] for t in runs)
                bound_low, bound_high = BOUNDS.get(k, (None, None))
                if (best.hparams[k] == low and low != bound_low) or (best.hparams[k] == high and high != bound_high):
                    at_edge.append(k)
            grid = [
                {**t.hparams, "median": t.final(0.5), self.criterion: t.final(prob), "seconds": t.seconds} for t in runs
            ]
            results[name] = SweepResult(name, self.criterion, dict(best.hparams), at_edge, grid)
        return results


def _key(value: float) -> float:
    # NaN never wins; +inf (diverged) loses to any finite value.
    return math.inf if math.isnan(value) else value
