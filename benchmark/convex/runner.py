"""Run one method on one experiment, many runs at once, and record quantiles along the way."""

from __future__ import annotations

import math
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from optim import evaluation_point

from .experiment import Experiment
from .methods import METHODS

__all__ = ["PROBS", "ConvexProblemRun", "ConvexRunner", "Trajectory", "checkpoints", "quantiles", "run_tasks"]

#: quantile levels recorded at every checkpoint: the central 99% and 90% bands, the
#: median, the upper 90%/99% quantiles of the tables, and the maximum
PROBS = (0.005, 0.05, 0.5, 0.9, 0.95, 0.99, 0.995, 1.0)

#: the most settings run in lockstep as one unit of work (see run_tasks)
GROUP_SIZE = 8

# Seed streams: the tuning sweep never sees the seeds of the reported runs.
STREAMS = {"eval": 0, "tune": 1}


def checkpoints(iters: int, count: int = 40) -> list[int]:
    """About ``count`` log-spaced step counts in [1, N], with every power of 10 and N."""
    points = set(np.unique(np.round(np.logspace(0, math.log10(iters), count)).astype(int)).tolist())
    points |= {10**j for j in range(int(math.log10(iters)) + 1)} | {iters}
    return sorted(p for p in points if 1 <= p <= iters)


def quantiles(values: Tensor, probs: Iterable[float] = PROBS) -> np.ndarray:
    """Empirical quantiles by the inverted CDF: the ⌈p·n⌉-th smallest value.

    No interpolation, so +inf (a diverged run) stays a well-defined order statistic.
    """
    ordered = np.sort(values.detach().cpu().numpy())
    n = len(ordered)
    return np.array([ordered[min(n - 1, max(0, math.ceil(p * n) - 1))] for p in probs])


@dataclass(frozen=True)
class ConvexProblemRun:
    """One vectorised run: ``runs`` seeds of ``method`` with ``hparams`` on ``experiment``."""

    experiment: Experiment
    method: str
    hparams: dict[str, float]
    runs: int
    seed: int
    source: str = "theory"
    stream: str = "eval"
    progress: bool = False


@dataclass
class Trajectory:
    """The result of a :class:`ConvexProblemRun`.

    Attributes:
        output, last: ``(len(checkpoints), len(PROBS))`` quantiles of f − f* across runs,
            at the theory's output (x̄ for SGD-type, y for SSTM-type, x for Adam) and at
            the last iterate x (the parameters).
        seconds: wall time of the run loop (of a group run in lockstep: the group's time
            divided by its number of settings).
        oracle_calls: Σ_k m_k, per run.
        capped_steps: steps whose mini-batch the oracle capped (logistic only).
        clipped_fraction: mean over runs of (clipped steps)/(steps); 0 without clipping.
        skipped_steps: steps skipped for a non-finite gradient, over all runs.
    """

    experiment: str
    method: str
    source: str
    hparams: dict[str, float]
    runs: int
    seed: int
    checkpoints: list[int]
    output: np.ndarray
    last: np.ndarray
    seconds: float
    oracle_calls: int
    capped_steps: int = 0
    clipped_fraction: float = 0.0
    skipped_steps: int = 0
    probs: tuple[float, ...] = field(default=PROBS)

    def at(self, n: int, prob: float, *, where: str = "output") -> float:
        """The ``prob`` quantile at checkpoint ``n``."""
        table = self.output if where == "output" else self.last
        return float(table[self.checkpoints.index(n), self.probs.index(prob)])

    def final(self, prob: float, *, where: str = "output") -> float:
        """The ``prob`` quantile at the final N."""
        return self.at(self.checkpoints[-1], prob, where=where)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: quantile columns as lists, non-finite numbers as strings."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("output", "last")}
        for where in ("output", "last"):
            table = getattr(self, where)
            out[where] = {f"q{p:g}": [_json_float(v) for v in table[:, j]] for j, p in enumerate(self.probs)}
        out["hparams"] = {k: _json_float(v) for k, v in self.hparams.items()}
        return out


def _json_float(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")


class ConvexRunner:
    """Runs tasks: all runs of a task advance together, one row per run.

    Within one experiment and seed stream, every method sees the same random draws
    (common random numbers): run r of SGD and run r of clipped-SGD get the same noise
    sequence, which makes their comparison sharper than independent seeds would.
    """

    def run(self, task: ConvexProblemRun) -> Trajectory:
        """Run ``task``.

        Returns:
            Its :class:`Trajectory`.

        Raises:
            ValueError: unknown method, or hyperparameters the optimizer rejects.
        """
        return self.run_group([task])[0]

    def run_group(self, tasks: list[ConvexProblemRun]) -> list[Trajectory]:
        """Run tasks that differ only in their hyperparameters, in lockstep.

        They share every random draw (they would anyway: same seed and stream), so each
        step samples once and every setting takes its gradient from that sample; this is
        how a sweep pays one sampling cost per step instead of one per grid point.

        Raises:
            ValueError: unknown method, tasks that differ in more than hyperparameters, or
                hyperparameters an optimizer rejects.
        """
        first = tasks[0]
        if first.method not in METHODS:
            raise ValueError(f"Unknown method {first.method!r}; available: {', '.join(METHODS)}")
        if any(_group_key(t) != _group_key(first) for t in tasks):
            raise ValueError("run_group: tasks must differ only in their hyperparameters")
        method = METHODS[first.method]
        experiment = first.experiment
        problem = experiment.build_problem()
        batches = experiment.batches(method)
        capped = 0
        if problem.max_batch is not None:
            capped = int((batches > problem.max_batch).sum())
            batches = np.minimum(batches, problem.max_batch)
        generator, rng = _streams(first.seed, first.stream, problem.device)
        params = [torch.nn.Parameter(problem.start(first.runs)) for _ in tasks]
        optimizers = [method.build(p, t.hparams, problem) for p, t in zip(params, tasks)]
        points = checkpoints(experiment.iters)
        wanted = set(points)
        output: list[list[np.ndarray]] = [[] for _ in tasks]
        last: list[list[np.ndarray]] = [[] for _ in tasks]
        steps: Iterable[int] = range(experiment.iters)
        if first.progress:
            from tqdm.auto import tqdm

            settings = f", {len(tasks)} settings" if len(tasks) > 1 else ""
            steps = tqdm(steps, desc=f"{experiment.name} {first.method} ({first.source}{settings})", leave=False)
        start = time.perf_counter()
        for k in steps:
            draw = problem.draw(first.runs, int(batches[k]), generator, rng)
            for param, optimizer in zip(params, optimizers):
                param.grad = problem.gradient_at(param.detach(), draw)
                optimizer.step()
            if k + 1 in wanted:
                # The only host syncs of the loop: about 40 per run.
                for i, (param, optimizer) in enumerate(zip(params, optimizers)):
                    output[i].append(quantiles(problem.gap(evaluation_point(optimizer)[0])))
                    last[i].append(quantiles(problem.gap(param.detach())))
        seconds = (time.perf_counter() - start) / len(tasks)
        results = []
        for i, (task, optimizer) in enumerate(zip(tasks, optimizers)):
            state = getattr(optimizer, "global_state", {})
            clipped = 0.0
            if method.clipped and "clipped_steps" in state:
                clipped = float((state["clipped_steps"] / state["step"].clamp(min=1)).mean())
            results.append(
                Trajectory(
                    experiment=experiment.name,
                    method=task.method,
                    source=task.source,
                    hparams=dict(task.hparams),
                    runs=task.runs,
                    seed=task.seed,
                    checkpoints=points,
                    output=np.array(output[i]),
                    last=np.array(last[i]),
                    seconds=seconds,
                    oracle_calls=int(batches.sum()),
                    capped_steps=capped,
                    clipped_fraction=clipped,
                    skipped_steps=getattr(optimizer, "num_skipped_steps", 0),
                )
            )
        return results


def _cost(task: ConvexProblemRun) -> float:
    """A rough cost for scheduling: per step, the per-run work plus a fixed Python overhead."""
    e = task.experiment
    per_run = e.dim if e.problem == "quadratic" else 50  # logistic: d = 6, plus a gather per run
    return task.runs * e.iters * (per_run + 50)


def _group_key(task: ConvexProblemRun) -> tuple:
    return (task.experiment, task.method, task.runs, task.seed, task.source, task.stream)


def _streams(seed: int, stream: str, device: torch.device) -> tuple[torch.Generator, np.random.Generator]:
    """A torch and a NumPy generator, both determined by (seed, stream)."""
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=(STREAMS[stream],))
    torch_seed = int(sequence.generate_state(1, dtype=np.uint64)[0] & ((1 << 63) - 1))
    generator = torch.Generator(device=device).manual_seed(torch_seed)
    return generator, np.random.default_rng(sequence)


def _run_group(tasks: list[ConvexProblemRun]) -> list[Trajectory]:
    return ConvexRunner().run_group(tasks)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@contextmanager
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_tasks(tasks: list[ConvexProblemRun], *, jobs: int = 1, progress: bool = True, desc: str = "runs") -> list[Trajectory]:
    """Run ``tasks``, in ``jobs`` worker processes when jobs > 1, results in task order.

    Tasks that differ only in their hyperparameters (a sweep's grid for one method) run
    as one group, in lockstep on shared draws (:meth:`ConvexRunner.run_group`).

    Every run uses one intra-op thread: its tensors are small (at most runs × d = 10⁵
    elements per op), where thread hand-offs cost more than they save, and on a loaded
    machine far more (a 20×6 by 6×390 product measured 16 ms with two threads, 6 µs with
    one). Parallelism comes from the worker processes instead.

    Args:
        jobs: worker processes (spawned: safe with torch's thread pools); 1 runs here.
        progress: a progress bar over groups (and over steps when jobs = 1).
    """
    if not tasks:
        return []
    from tqdm.auto import tqdm

    groups: dict[tuple, list[int]] = {}
    for i, task in enumerate(tasks):
        groups.setdefault(_group_key(task), []).append(i)
    # Units of at most GROUP_SIZE settings (big groups would leave workers idle at the
    # end), longest first (cost ∝ settings · runs · N · per-run work).
    chunks = [idx[j : j + GROUP_SIZE] for idx in groups.values() for j in range(0, len(idx), GROUP_SIZE)]
    order = sorted(chunks, key=lambda idx: -sum(_cost(tasks[i]) for i in idx))
    units = [[replace(tasks[i], progress=progress and jobs <= 1) for i in idx] for idx in order]
    if jobs <= 1 or len(units) == 1:
        runner = ConvexRunner()
        with _one_thread():
            bar = tqdm(units, desc=desc, disable=not progress or len(units) == 1)
            done = [runner.run_group(unit) for unit in bar]
    else:
        context = get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker, initargs=(1,)) as pool:
            done = list(tqdm(pool.map(_run_group, units), total=len(units), desc=desc, disable=not progress))
    out: list[Trajectory] = [None] * len(tasks)  # type: ignore[list-item]
    for idx, trajectories in zip(order, done):
        for i, trajectory in zip(idx, trajectories):
            out[i] = trajectory
    return out
