"""Convex theory suite: the high-probability guarantees of clipped-SGD and clipped-SSTM.

For convex L-smooth problems whose stochastic gradients only have a bounded variance
(possibly heavy tails), clipped-SSTM reaches f(yᴺ) − f* = O(1/N²) and clipped-SGD
f(x̄ᴺ) − f* = O(ln N / N) with probability ≥ 1 − β. This package measures that: many
independent runs of the optimizers of :mod:`optim` (vectorised, one run per row, see
:mod:`benchmark.convex.per_run`) on problems with a known optimum, quantiles of
f(output) − f* across runs, slopes against the theory, plots.

Modules: ``noise`` (noise laws), ``problem``/``quadratic``/``logistic`` (test problems),
``per_run`` (vectorised optimizers), ``theory`` (the theorems' hyperparameters),
``methods`` (the five methods), ``experiment`` (problem + noise + batch policy),
``runner`` (one vectorised run), ``tuning`` (the sweep), ``suite`` (everything),
``report``/``plots`` (outputs), ``cli`` (``python -m benchmark convex``).

References:
    Gorbunov, Danilova, Gasnikov. Stochastic optimization with heavy-tailed noise via
    accelerated gradient clipping. NeurIPS 2020 (arXiv:2005.10785).
"""

from .experiment import Experiment
from .logistic import LogisticProblem
from .methods import METHODS, Method
from .noise import NoiseModel
from .per_run import PerRunClippedSGD, PerRunClippedSSTM
from .quadratic import QuadraticProblem
from .runner import ConvexProblemRun, ConvexRunner, Trajectory
from .suite import ConvexSuite
from .theory import TheoryConstants

__all__ = [
    "METHODS",
    "ConvexProblemRun",
    "ConvexRunner",
    "ConvexSuite",
    "Experiment",
    "LogisticProblem",
    "Method",
    "NoiseModel",
    "PerRunClippedSGD",
    "PerRunClippedSSTM",
    "QuadraticProblem",
    "TheoryConstants",
    "Trajectory",
]
