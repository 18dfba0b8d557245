"""One experiment: a problem, its noise, a mini-batch policy and a horizon N."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .logistic import LogisticProblem
from .methods import Method
from .noise import NoiseModel
from .problem import ConvexProblem
from .quadratic import QuadraticProblem
from .theory import TheoryConstants

__all__ = ["PROBLEMS", "Experiment"]

PROBLEMS = ("quadratic", "logistic")
_DTYPES = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Experiment:
    """What to run; every method of an experiment gets the same problem, noise and budget.

    Picklable and hashable, so worker processes rebuild the problem from it.

    Attributes:
        problem: ``quadratic`` or ``logistic``.
        noise: the quadratic's noise (``gaussian``, ``student_t:2.5``, ...); ignored by
            ``logistic``, whose noise is the sampling of its data.
        batch: ``"theorem"`` (the mini-batch sizes of the theorems: m for SGD-type and
            Adam, m_k for SSTM-type, computed from the *theory* hyperparameters so that
            tuned and theory settings get the same budget), or a fixed size m ≥ 1.
        iters: the horizon N.
        dim, sigma, condition, rotate: quadratic only (see :class:`QuadraticProblem`).
        problem_seed: for the quadratic's x* and signs.
        dtype, device: of the iterates (``float64``/``float32``, ``cpu``/``cuda``).
        max_batch: the logistic oracle's cap on m (larger requests are capped and flagged).
        constants: the constants of the theorem formulas.

    Raises:
        ValueError: unknown problem, iters < 1, an invalid batch or dtype.
    """

    problem: str
    noise: str = "gaussian"
    batch: str | int = 1
    iters: int = 10_000
    dim: int = 100
    sigma: float = 1.0
    condition: float = 1e6
    rotate: bool = False
    problem_seed: int = 0
    dtype: str = "float64"
    device: str = "cpu"
    max_batch: int = 256
    constants: TheoryConstants = field(default_factory=TheoryConstants)

    def __post_init__(self) -> None:
        if self.problem not in PROBLEMS:
            raise ValueError(f"Invalid problem: {self.problem!r} (must be one of {', '.join(PROBLEMS)})")
        if not isinstance(self.iters, int) or self.iters < 1:
            raise ValueError(f"Invalid iters: {self.iters!r} (must be an integer >= 1)")
        if self.batch != "theorem" and not (isinstance(self.batch, int) and self.batch >= 1):
            raise ValueError(f"Invalid batch: {self.batch!r} (must be 'theorem' or an integer >= 1)")
        if self.dtype not in _DTYPES:
            raise ValueError(f"Invalid dtype: {self.dtype!r} (must be one of {', '.join(_DTYPES)})")
        if self.problem == "logistic":
            object.__setattr__(self, "noise", "data")
        else:
            NoiseModel.parse(self.noise, self.sigma)  # validate early, in the parent process

    @property
    def name(self) -> str:
        """File-safe identifier, e.g. ``quadratic_student_t2.5_m1``."""
        batch = "mtheorem" if self.batch == "theorem" else f"m{self.batch}"
        return f"{self.problem}_{self.noise.replace(':', '')}_{batch}"

    @property
    def title(self) -> str:
        """Human-readable heading, e.g. ``quadratic, noise gaussian, fixed mini-batch m = 1, N = 10000``."""
        batch = "theorem's mini-batches" if self.batch == "theorem" else f"fixed mini-batch m = {self.batch}"
        return f"{self.problem}, noise {self.noise}, {batch}, N = {self.iters}"

    def build_problem(self) -> ConvexProblem:
        """The problem (built once per process and cached)."""
        return _build(self)

    def batches(self, method: Method) -> np.ndarray:
        """The mini-batch size of each of the N steps for ``method``."""
        if self.batch != "theorem":
            return np.full(self.iters, self.batch, dtype=np.int64)
        problem = self.build_problem()
        if method.family == "sstm":
            a = self.constants.sstm(problem, self.iters)["a"]
            return self.constants.sstm_batches(problem, self.iters, a)
        return self.constants.sgd_batches(problem, self.iters)

    def theory_hparams(self, method: Method) -> dict[str, float]:
        """The theorem formulas' hyperparameters of ``method`` for this problem and N."""
        return method.theory_hparams(self.build_problem(), self.iters, self.constants)

    def as_dict(self) -> dict[str, Any]:
        """Every field, for results.json."""
        out = asdict(self)
        out["constants"] = self.constants.as_dict()
        return out


@functools.lru_cache(maxsize=8)
def _build(experiment: Experiment) -> ConvexProblem:
    dtype = _DTYPES[experiment.dtype]
    if experiment.problem == "logistic":
        return LogisticProblem(max_batch=experiment.max_batch, dtype=dtype, device=experiment.device)
    return QuadraticProblem(
        experiment.dim,
        NoiseModel.parse(experiment.noise, experiment.sigma),
        condition=experiment.condition,
        rotate=experiment.rotate,
        seed=experiment.problem_seed,
        dtype=dtype,
        device=experiment.device,
    )
