"""Run the whole convex suite: theory settings, the tuning sweep, tuned settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .experiment import Experiment
from .methods import METHODS, check_methods
from .runner import ConvexProblemRun, Trajectory, run_tasks
from .tuning import Sweep, SweepResult

__all__ = ["SOURCES", "ConvexSuite", "ExperimentResult"]

#: where hyperparameters come from: the theorems' formulas, or the sweep
SOURCES = ("theory", "tuned")


@dataclass
class ExperimentResult:
    """Everything measured on one experiment (input of the report)."""

    experiment: Experiment
    problem: dict[str, Any]
    theory: dict[str, dict[str, float]]
    sweep: dict[str, SweepResult]
    trajectories: list[Trajectory]
    batches: dict[str, dict[str, int]] = field(default_factory=dict)

    def trajectory(self, method: str, source: str) -> Trajectory | None:
        """The reported run of ``method`` with hyperparameters from ``source`` (None if absent)."""
        for t in self.trajectories:
            if t.method == method and t.source == source:
                return t
        return None


class ConvexSuite:
    """Runs every experiment with every method and hyperparameter source.

    Phase 1 runs the theory settings and every sweep point of every experiment, phase 2
    the tuned settings; each phase is one pool of tasks (see
    :func:`~benchmark.convex.runner.run_tasks`), so ``jobs`` worker processes stay busy.

    Args:
        experiments: what to run.
        methods: method names (keys of :data:`~benchmark.convex.methods.METHODS`).
        runs: runs per reported setting (≥ 1000 for the report).
        tune_runs: runs per sweep point (on other seeds).
        seed: base seed of both streams.
        sources: a subset of :data:`SOURCES` per experiment, as a function of it
            (default: theory and tuned everywhere).
        criterion: the sweep's selection criterion.
        jobs: worker processes.
        progress: show progress bars.

    Raises:
        ValueError: unknown method or source.
    """

    def __init__(
        self,
        experiments: list[Experiment],
        methods: list[str],
        *,
        runs: int,
        tune_runs: int,
        seed: int = 0,
        sources=None,
        criterion: str = "q99",
        jobs: int = 1,
        progress: bool = True,
    ) -> None:
        check_methods(methods)
        self.experiments = experiments
        self.methods = list(methods)
        self.runs = runs
        self.tune_runs = tune_runs
        self.seed = seed
        self.sources = sources or (lambda experiment: SOURCES)
        for experiment in experiments:
            bad = [s for s in self.sources(experiment) if s not in SOURCES]
            if bad:
                raise ValueError(f"Invalid source(s) {bad} (must be in {SOURCES})")
        self.criterion = criterion
        self.jobs = jobs
        self.progress = progress
        self.seconds = 0.0

    def run(self) -> list[ExperimentResult]:
        """Run everything; results in experiment order."""
        start = time.perf_counter()
        sweeps = {
            e: Sweep(e, self.methods, runs=self.tune_runs, seed=self.seed, criterion=self.criterion)
            for e in self.experiments
            if "tuned" in self.sources(e)
        }
        phase1: list[ConvexProblemRun] = []
        for e in self.experiments:
            if "theory" in self.sources(e):
                for m in self.methods:
                    phase1.append(ConvexProblemRun(e, m, e.theory_hparams(METHODS[m]), self.runs, self.seed, "theory"))
            if e in sweeps:
                phase1 += sweeps[e].tasks()
        done1 = self._run(phase1, "theory settings and sweeps")
        selected = {}
        for e, sweep in sweeps.items():
            grid = [t for task, t in zip(phase1, done1) if task.experiment == e and task.source == "sweep"]
            selected[e] = sweep.select(grid)
        phase2 = [
            ConvexProblemRun(e, m, selected[e][m].best, self.runs, self.seed, "tuned")
            for e in sweeps
            for m in self.methods
            if m in selected[e]
        ]
        done2 = self._run(phase2, "tuned settings")
        results = []
        for e in self.experiments:
            problem = e.build_problem()
            trajectories = [
                t for task, t in zip(phase1 + phase2, done1 + done2) if task.experiment == e and task.source != "sweep"
            ]
            batches = {}
            for m in self.methods:
                schedule = e.batches(METHODS[m])
                batches[m] = {"min": int(schedule.min()), "max": int(schedule.max()), "total": int(schedule.sum())}
            results.append(
                ExperimentResult(
                    experiment=e,
                    problem=problem.describe(),
                    theory={m: e.theory_hparams(METHODS[m]) for m in self.methods},
                    sweep=selected.get(e, {}),
                    trajectories=trajectories,
                    batches=batches,
                )
            )
        self.seconds = time.perf_counter() - start
        return results

    def _run(self, tasks: list[ConvexProblemRun], desc: str) -> list[Trajectory]:
        return run_tasks(tasks, jobs=self.jobs, progress=self.progress, desc=desc)
