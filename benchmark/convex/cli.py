"""``python -m benchmark convex``: the convex theory suite from the command line."""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

from .experiment import PROBLEMS, Experiment
from .methods import METHODS
from .noise import NOISE_FAMILIES
from .suite import ConvexSuite
from .theory import TheoryConstants
from .tuning import CRITERIA

__all__ = ["build_parser", "main"]

_FULL = {"runs": 1000, "iters": 10_000, "dim": 100, "tune_runs": 200}
_QUICK = {"runs": 300, "iters": 2000, "dim": 50, "tune_runs": 100}


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (its ``--help`` documents every option)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark convex",
        description=(
            "Convex theory suite: many independent runs of SGD, clipped-SGD, SSTM, clipped-SSTM and "
            "Adam (the optimizers of optim/, vectorised one run per row) on problems with a known "
            "optimum, under light- and heavy-tailed gradient noise. Reports quantiles of f(output) - f* "
            "across runs at several N, log-log slopes against the theorems' -1 / -2, and plots with "
            "quantile bands. Hyperparameters come from the theorems' formulas (constants stated) and "
            "from a small sweep on separate seeds."
        ),
        epilog=(
            "Experiments: quadratic x --noise x --batch, and logistic x --logistic-batch (the logistic "
            "problem's noise is the sampling of its data). Examples:\n"
            "  python -m benchmark convex                      # full settings (a few minutes)\n"
            "  python -m benchmark convex --quick              # about a minute\n"
            "  python -m benchmark convex --problems quadratic --noise pareto:2.2 --batch 1 --methods sgd,clipped_sgd"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to run")
    what.add_argument("--problems", type=_csv, default=list(PROBLEMS), help=f"comma list of {', '.join(PROBLEMS)} (default: all)")
    what.add_argument(
        "--noise",
        type=_csv,
        default=["gaussian", "student_t:2.5"],
        help=f"quadratic's noise laws, family[:tail index] with families {', '.join(NOISE_FAMILIES)}; "
        "tail index > 2 (finite variance) (default: gaussian,student_t:2.5)",
    )
    what.add_argument(
        "--batch",
        type=_csv,
        default=["theorem", "1"],
        help="quadratic's mini-batch policies: 'theorem' (the theorems' m / m_k, as an oracle with "
        "variance sigma^2/m) and/or fixed sizes (default: theorem,1)",
    )
    what.add_argument(
        "--logistic-batch",
        type=_csv,
        default=["1"],
        help="logistic's mini-batch policies (default: 1). 'theorem' asks for up to ~1e8 samples per "
        "step; they are drawn for real, so they are capped at --max-batch (flagged in the report)",
    )
    what.add_argument("--methods", type=_csv, default=list(METHODS), help=f"comma list of {', '.join(METHODS)} (default: all)")
    what.add_argument(
        "--sources",
        default="auto",
        help="hyperparameter sources, comma list of theory,tuned; 'auto' (default) = theory with the "
        "theorem's mini-batches (the theorems' setting), tuned with a fixed mini-batch (where the "
        "theorems' formulas, made for their mini-batches, do not apply)",
    )
    size = parser.add_argument_group("sizes (defaults: full settings; --quick: smaller)")
    size.add_argument("--quick", action="store_true", help="runs 300, iters 2000, dim 50, tune-runs 100")
    size.add_argument("--runs", type=int, help="independent runs per reported setting (full: 1000)")
    size.add_argument("--iters", type=int, help="horizon N (full: 10000)")
    size.add_argument("--dim", type=int, help="quadratic's dimension d (full: 100)")
    size.add_argument("--tune-runs", type=int, help="runs per sweep grid point (full: 200)")
    prob = parser.add_argument_group("problem")
    prob.add_argument("--sigma", type=float, default=1.0, help="quadratic's noise level: E||xi||^2 = sigma^2 (default 1 = L R0)")
    prob.add_argument("--condition", type=float, default=1e6, help="quadratic's L/mu (default 1e6)")
    prob.add_argument("--rotate", action="store_true", help="quadratic with a random eigenbasis (fair to Adam; ~2x slower)")
    prob.add_argument("--max-batch", type=int, default=16, help="logistic oracle's cap on m (default 16)")
    theory = parser.add_argument_group("theory constants (see benchmark/convex/theory.py)")
    theory.add_argument("--beta", type=float, default=0.01, help="confidence: bounds hold w.p. >= 1 - beta (default 0.01)")
    theory.add_argument("--c-lambda", type=float, default=2.0, help="clipped-SGD lambda = c * L * R0 (default 2)")
    theory.add_argument("--c-a", type=float, default=1.0, help="clipped-SSTM a = c * ln^2(4N/beta) (default 1)")
    theory.add_argument("--c-B", type=float, default=1.0, help="clipped-SSTM B = c * R0 / ln(4N/beta) (default 1)")
    theory.add_argument("--c-m", type=float, default=1.0, help="factor of both mini-batch formulas (default 1)")
    run = parser.add_argument_group("execution and output")
    run.add_argument("--criterion", choices=list(CRITERIA), default="q99", help="sweep selects the min of this quantile at N (default q99)")
    run.add_argument("--seed", type=int, default=0, help="base seed (reported runs and sweep use disjoint streams)")
    run.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="worker processes (default: min(2, cores))")
    run.add_argument("--device", default="cpu", help="torch device of the iterates (default cpu)")
    run.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="iterate dtype (default float64)")
    run.add_argument("--out", type=Path, help="output folder (default results/convex/<timestamp>)")
    run.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _experiments(args: argparse.Namespace) -> list[Experiment]:
    constants = TheoryConstants(beta=args.beta, c_lambda=args.c_lambda, c_a=args.c_a, c_B=args.c_B, c_m=args.c_m)
    def policies(values: list[str]) -> list[str | int]:
        try:
            return [b if b == "theorem" else int(b) for b in values]
        except ValueError:
            raise ValueError(f"Invalid batch in {values}: must be 'theorem' or an integer >= 1") from None

    common = dict(iters=args.iters, dim=args.dim, sigma=args.sigma, condition=args.condition, rotate=args.rotate,
                  dtype=args.dtype, device=args.device, max_batch=args.max_batch, constants=constants)
    out = []
    for problem in args.problems:
        noises = args.noise if problem == "quadratic" else ["data"]
        for batch in policies(args.batch if problem == "quadratic" else args.logistic_batch):
            for noise in noises:
                out.append(Experiment(problem, noise=noise, batch=batch, **common))
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the suite; print the tables; write summary.md, results.json and plots.

    Returns:
        0 on success, 2 for invalid arguments.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in (_QUICK if args.quick else _FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        for name in ("runs", "iters", "dim", "tune_runs", "jobs"):
            if getattr(args, name) < 1:
                raise ValueError(f"Invalid --{name.replace('_', '-')}: {getattr(args, name)} (must be >= 1)")
        experiments = _experiments(args)
        if args.sources == "auto":
            sources = lambda e: ("theory",) if e.batch == "theorem" else ("tuned",)  # noqa: E731
        else:
            chosen = tuple(_csv(args.sources))
            sources = lambda e: chosen  # noqa: E731
        suite = ConvexSuite(
            experiments, args.methods, runs=args.runs, tune_runs=args.tune_runs, seed=args.seed, sources=sources,
            criterion=args.criterion, jobs=args.jobs, progress=not args.no_progress,
        )
    except ValueError as err:
        parser.print_usage(sys.stderr)
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    from .report import ConvexReport

    out = args.out or Path("results") / "convex" / datetime.now().strftime("%Y%m%d-%H%M%S")
    start = time.perf_counter()
    results = suite.run()
    meta = {
        "command": "python -m benchmark convex " + shlex.join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "torch": torch.__version__,
        "jobs": args.jobs,
        "runs": args.runs,
        "tune_runs": args.tune_runs,
        "seed": args.seed,
        "seconds": time.perf_counter() - start,
        "formulas": experiments[0].constants.formulas() if experiments else [],
        "date": datetime.now().isoformat(timespec="seconds"),
    }
    report = ConvexReport(results, meta)
    paths = report.write(out, plots=not args.no_plots)
    print(report.markdown())
    print(f"wrote {len(paths)} files to {out}/: " + ", ".join(p.name for p in paths))
    return 0
