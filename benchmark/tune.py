"""``python -m benchmark tune``: equal-budget hyperparameter tuning on the held-out split (Optuna).

For each (task, optimizer) one Optuna study gets the same budget of trials. A trial draws
the optimizer's hyperparameters from the search space its registry entry declares
(``optim.get_optimizer_spec(name).search_space``) with Optuna's quasi-random
``QMCSampler`` (scrambled Sobol; Optuna draws a study's first trial at random and takes
the space from it), trains the task exactly as a bench run does (``python -m benchmark
fit`` with the grid's stacked configs, see :mod:`benchmark.grid`) but with
``--data.init_args.tune_split true`` (train on 90% of the training split), and is scored
by the primary metric on the held-out 10% (:mod:`datamodules.holdout`): the reported
validation split is never looked at.

Studies live in a storage: an SQLite file by default (``<out>/optuna.db``), any Optuna
storage URL (``postgresql://...``, ``mysql://...``), or a journal file
(``journal:/shared/tune.log``, Optuna's ``JournalFileBackend``) on a shared filesystem.
Many processes (SLURM jobs, one per GPU) may work on the same studies at once; the
budget counts finished trials across all of them. A rerun resumes: studies are loaded,
trials left running by a process that died are marked failed (``interrupted``, not
counted) and the budget is filled up. A trial whose training crashes or diverges is
marked failed and counts.

Outputs in ``--out``: ``configs/<dataset>/<file>.yaml`` with the best settings (the whole
``optimizer_args`` dict, since a later config's dict replaces an earlier one; with
``--install`` also into ``benchmark/configs/``, where the bench reads them:
``embedded_<optimizer>.yaml`` for the bench preset, ``tuned_<optimizer>.yaml`` for the
full one), ``trials.csv`` and ``<dataset>_sensitivity.png`` (metric vs learning rate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from . import launch
from .cli import parse_with_extra
from .grid import CONFIG_DIR, DATASETS, DEFAULT_OPTIMIZERS, config_stack, fingerprint, run_env
from .report_stats import higher_is_better
from .tune_outputs import (
    best_fragment,
    fragment_name,
    plot_sensitivity,
    write_trials_csv,
)

__all__ = ["COUNTED", "DEFAULT_TRIALS", "counted_trials", "distributions", "main", "open_storage", "run_trials", "work_on"]

DEFAULT_TRIALS = {"bench": 6, "full": 20}
#: Trial outcomes that use up budget (an interrupted or surplus trial does not).
COUNTED = ("complete", "crashed", "diverged")
PRIMARY = {"imagenet": "val/top1", "voc": "val/miou", "div2k": "val/psnr", "text": "val/bpc"}


def open_storage(spec: str | None, out: Path):
    """An Optuna storage from ``--storage``: None (``<out>/optuna.db``), a URL, or
    ``journal:PATH`` / a path ending in ``.log`` or ``.journal`` (a journal file)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if spec is None:
        out.mkdir(parents=True, exist_ok=True)
        return _rdb_storage(f"sqlite:///{(out / 'optuna.db').resolve()}")
    if spec.startswith("journal:") or spec.endswith((".log", ".journal")):
        path = Path(spec.removeprefix("journal:")).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in spec:
        raise ValueError(f"Invalid --storage: {spec!r} (must be an Optuna URL such as sqlite:///tune.db, or journal:PATH)")
    return _rdb_storage(spec)


def _rdb_storage(url: str):
    """``RDBStorage(url)``; for an SQLite file under an exclusive file lock, because two
    processes opening a new file at once race on creating its schema (Optuna's version
    table: an IntegrityError in one of them)."""
    import optuna

    from datamodules.embedded.store import exclusive_lock

    if not url.startswith("sqlite:///"):
        return optuna.storages.RDBStorage(url)
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(path.with_name(path.name + ".lock")):
        return optuna.storages.RDBStorage(url)


def distributions(optimizer: str) -> dict[str, Any]:
    """The registry entry's search space as Optuna distributions.

    Raises:
        ValueError: the entry declares no search space (nothing to tune).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from optim import get_optimizer_spec
    from optim.search_space import Choice, LogUniform

    space = get_optimizer_spec(optimizer).search_space
    if not space:
        raise ValueError(f"Invalid optimizer for tuning: {optimizer!r} declares no search_space in the registry (nothing to tune)")
    out = {}
    for name, dim in space.items():
        if isinstance(dim, Choice):
            out[name] = CategoricalDistribution(dim.options)
        else:
            out[name] = FloatDistribution(dim.low, dim.high, log=isinstance(dim, LogUniform))
    return out


def counted_trials(study) -> int:
    """Trials that used up budget, over every process working on the study."""
    return sum(t.user_attrs.get("outcome") in COUNTED for t in study.get_trials(deepcopy=False))


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead(worker: str) -> bool:
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def fail_interrupted(study, stale_after: float) -> list[int]:
    """Mark as failed (outcome ``interrupted``) the running trials whose process is gone:
    on this host a dead pid, elsewhere no sign of life for ``stale_after`` seconds.
    Returns their numbers."""
    from optuna.trial import TrialState

    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        alive_at = t.user_attrs.get("alive_at", t.datetime_start.timestamp() if t.datetime_start else now)
        if _dead(t.user_attrs.get("worker", "")) or now - alive_at > stale_after:
            # Optuna has no public call to finish another process's trial; the storage's is stable.
            study._storage.set_trial_user_attr(t._trial_id, "outcome", "interrupted")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    return failed


def run_trials(
    study,
    n_trials: int,
    space: dict[str, Any],
    objective: Callable[[Any], float],
    *,
    log: Callable[[str], None] = print,
    stale_after: float = 900.0,
) -> int:
    """Work on ``study`` until ``n_trials`` trials have used up budget (in all processes).

    ``objective(trial)`` returns the metric; an exception marks the trial failed
    (``crashed``), a non-finite value too (``diverged``); both count. Ctrl-C marks the
    running trial failed (``interrupted``, not counted) and re-raises.

    Returns:
        The number of trials this process ran.
    """
    from optuna.trial import TrialState

    for number in fail_interrupted(study, stale_after):
        log(f"{study.study_name}: trial {number} was interrupted (its process is gone); marked failed, not counted")
    ran = 0
    while counted_trials(study) < n_trials:
        trial = study.ask(space)
        trial.set_user_attr("worker", _worker())
        trial.set_user_attr("alive_at", time.time())
        earlier = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number]
        if counted_trials(study) + len(earlier) >= n_trials:  # other processes fill the budget
            trial.set_user_attr("outcome", "surplus")
            study.tell(trial, state=TrialState.PRUNED)
            break
        start = time.monotonic()
        try:
            value = float(objective(trial))
        except KeyboardInterrupt:
            trial.set_user_attr("outcome", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
            raise
        except Exception as err:  # noqa: BLE001 - a failing trial is a result, the study goes on
            trial.set_user_attr("outcome", "crashed")
            trial.set_user_attr("error", str(err)[-1000:])
            study.tell(trial, state=TrialState.FAIL)
            log(f"{study.study_name} trial {trial.number}: crashed ({str(err).splitlines()[-1] if str(err) else type(err).__name__})")
            ran += 1
            continue
        ran += 1
        seconds = time.monotonic() - start
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
        if not math.isfinite(value):
            trial.set_user_attr("outcome", "diverged")
            study.tell(trial, state=TrialState.FAIL)
            log(f"{study.study_name} trial {trial.number} [{counted_trials(study)}/{n_trials}]: {params} -> diverged ({seconds:.0f} s)")
            continue
        trial.set_user_attr("outcome", "complete")
        study.tell(trial, value)
        log(f"{study.study_name} trial {trial.number} [{counted_trials(study)}/{n_trials}]: {params} -> {value:.4g} ({seconds:.0f} s)")
    return ran


def work_on(study, n_trials: int, space: dict[str, Any], objective: Callable[[Any], float], parallel: int, *, stale_after: float = 900.0) -> int:
    """:func:`run_trials` in ``parallel`` threads of this process (each trial is its own
    process, so the threads only wait); the budget is shared as between processes.
    Returns the number of trials run; an interruption in any thread is re-raised."""
    if parallel == 1:
        return run_trials(study, n_trials, space, objective, log=lambda s: print(s, flush=True), stale_after=stale_after)
    ran, errors = [], []

    def worker() -> None:
        try:
            ran.append(run_trials(study, n_trials, space, objective, log=lambda s: print(s, flush=True), stale_after=stale_after))
        except BaseException as err:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(err)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(parallel)]
    for i, thread in enumerate(threads):
        thread.start()
        if i == 0:
            time.sleep(0.2)  # the first thread fails interrupted trials before the others look
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(ran)


def tuning_fingerprint(dataset: str, optimizer: str, args: argparse.Namespace) -> str:
    """What decides a trial's outcome besides its hyperparameters: the tuning stack's
    contents, the training seed, the real data's root and the arguments after ``--``."""
    settings = ["--seed", str(args.seed), "--data-dir", str(args.data_dir), *args.extra]
    return fingerprint(tuning_stack(dataset, optimizer, args.preset), settings)


def check_settings(study, settings: str) -> None:
    """Record the settings a study's trials were run with; refuse to add trials of other
    settings (a changed config or budget) to it.

    Raises:
        ValueError: the study holds trials of other settings (the message says what to do).
    """
    recorded = study.user_attrs.get("settings")
    if recorded is None or not study.get_trials(deepcopy=False):
        study.set_user_attr("settings", settings)
    elif recorded != settings:
        raise ValueError(
            f"Invalid study {study.study_name!r}: its trials were run with other configs or arguments "
            "(a config fragment, --seed, --data-dir or the arguments after -- changed since). Start a new study "
            "with --study-prefix NAME or another --out/--storage, or delete the old one "
            f"(optuna.delete_study(study_name={study.study_name!r}, storage=...))"
        )


def tuning_stack(dataset: str, optimizer: str, preset: str) -> list[Path]:
    """The grid's config stack without tuned settings (they are what tuning makes)."""
    tuned = {fragment_name(optimizer, p) for p in DEFAULT_TRIALS}
    return [p for p in config_stack(dataset, optimizer, preset) if p.name not in tuned]


def base_optimizer_args(stack: list[Path]) -> dict[str, Any]:
    """``model.init_args.optimizer_args`` as the stack leaves it (the last one wins whole)."""
    args: dict[str, Any] = {}
    for path in stack:
        found = ((yaml.safe_load(path.read_text()) or {}).get("model") or {}).get("init_args", {}).get("optimizer_args")
        if found is not None:
            args = dict(found)
    return args


def fit_objective(dataset: str, optimizer: str, args: argparse.Namespace) -> Callable[[Any], float]:
    """A trial = one ``python -m benchmark fit`` on the tuning split; returns its primary metric."""
    stack = tuning_stack(dataset, optimizer, args.preset)
    base = base_optimizer_args(stack)

    def objective(trial) -> float:
        run_dir = Path(args.out) / "runs" / dataset / optimizer / f"trial{trial.number:04d}"
        cmd = [sys.executable, "-m", "benchmark", "fit", *(a for p in stack for a in ("--config", str(p)))]
        cmd += ["--model.init_args.optimizer_args", json.dumps({**base, **trial.params})]
        cmd += ["--data.init_args.tune_split", "true", "--seed_everything", str(args.seed)]
        cmd += ["--run.dir", str(run_dir), "--run.wandb", args.wandb, "--trainer.enable_progress_bar", "false"]
        if args.data_dir:
            cmd += ["--data.init_args.data_dir", args.data_dir]
        cmd += list(args.extra)
        trial.set_user_attr("run_dir", str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        env = run_env(None, args.parallel)
        with open(run_dir / "stdout.log", "w") as log:
            # The bench preset's short CPU runs: forked from a server that imported the stack once.
            proc = launch.start(cmd, env, log, fork=args.preset == "bench")
            beat = time.time()
            try:
                while proc.poll() is None:
                    time.sleep(1.0)
                    if time.time() - beat > 30:
                        beat = time.time()
                        trial.set_user_attr("alive_at", beat)  # a sign of life for other processes
            finally:
                if proc.poll() is None:
                    proc.terminate()
        if proc.returncode != 0:
            raise RuntimeError(f"fit exited with {proc.returncode}: {(run_dir / 'stdout.log').read_text()[-800:]}")
        final = json.loads((run_dir / "final.json").read_text())
        return float(final["metrics"].get(final.get("primary_metric") or PRIMARY[dataset], math.nan))

    return objective


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark tune",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every trial's `python -m benchmark fit`.",
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULT_OPTIMIZERS))
    parser.add_argument("--preset", choices=tuple(DEFAULT_TRIALS), default="bench")
    parser.add_argument("--trials", type=int, default=None, help=f"trials per (task, optimizer); default per preset: {DEFAULT_TRIALS}")
    parser.add_argument("--storage", default=None, help="Optuna storage: URL, or journal:PATH on a shared filesystem (default: <out>/optuna.db)")
    parser.add_argument("--study-prefix", default="clipbench", help="studies are named <prefix>-<dataset>-<optimizer>-<preset>")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every trial (initial weights, data order)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="seed of the scrambled Sobol sequence")
    parser.add_argument("--data-dir", default=None, help="root of the real dataset (--preset full, one dataset)")
    parser.add_argument("--out", default="results/tune", help="storage (default), trial runs, configs, trials.csv, plots")
    parser.add_argument("--install", action="store_true", help="also write the best settings into benchmark/configs/<dataset>/")
    parser.add_argument("--wandb", default="disabled", choices=("auto", "online", "offline", "disabled"))
    parser.add_argument("--stale-after", type=float, default=900.0, help="seconds without a sign of life after which another host's running trial counts as interrupted")
    parser.add_argument("--parallel", type=int, default=1, help="trials run at a time in this process (on a CPU each gets cores/N threads); other processes may share the studies too")
    parser.add_argument("--outputs-only", action="store_true", help="run no trial: only write configs, trials.csv and plots from the studies")
    return parser


def main(argv: list[str] | None = None) -> int:
    import optuna

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_with_extra(build_parser(), argv)
    n_trials = args.trials if args.trials is not None else DEFAULT_TRIALS[args.preset]
    if n_trials < 1:
        raise ValueError(f"Invalid --trials: {n_trials} (must be >= 1)")
    if args.parallel < 1:
        raise ValueError(f"Invalid --parallel: {args.parallel} (must be >= 1)")
    if args.preset == "full" and (not args.data_dir or len(args.datasets) != 1):
        raise ValueError("Invalid arguments: --preset full needs --data-dir and exactly one --datasets entry")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    storage = open_storage(args.storage, out)
    studies = {}
    for dataset in args.datasets:
        metric = PRIMARY[dataset]
        for optimizer in args.optimizers:
            space = distributions(optimizer)
            with warnings.catch_warnings():  # QMCSampler is marked experimental since Optuna 3.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = optuna.samplers.QMCSampler(
                    scramble=True, seed=args.sampler_seed, warn_independent_sampling=False, warn_asynchronous_seeding=False
                )
            study = optuna.create_study(
                study_name=f"{args.study_prefix}-{dataset}-{optimizer}-{args.preset}",
                storage=storage,
                sampler=sampler,
                direction="maximize" if higher_is_better(metric) else "minimize",
                load_if_exists=True,
            )
            study.set_user_attr("metric", metric)
            check_settings(study, tuning_fingerprint(dataset, optimizer, args))
            studies[(dataset, optimizer)] = study
            if not args.outputs_only:
                print(f"{study.study_name}: {counted_trials(study)}/{n_trials} trials done; {metric} on the held-out split", flush=True)
                work_on(study, n_trials, space, fit_objective(dataset, optimizer, args), args.parallel, stale_after=args.stale_after)
    command = "python -m benchmark tune " + " ".join(argv)
    written = []
    for (dataset, optimizer), study in studies.items():
        stack = tuning_stack(dataset, optimizer, args.preset)
        fragment = best_fragment(study, base_optimizer_args(stack), command, n_trials)
        if fragment is None:
            print(f"{study.study_name}: no complete trial; no config written", file=sys.stderr)
            continue
        name = fragment_name(optimizer, args.preset)
        targets = [out / "configs" / dataset / name] + ([CONFIG_DIR / dataset / name] if args.install else [])
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(fragment)
            written.append(path)
    write_trials_csv(studies, out / "trials.csv")
    plots = plot_sensitivity(studies, out)
    print(f"wrote {len(written)} config(s) ({', '.join(map(str, written))}), {out / 'trials.csv'} and {len(plots)} plot(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
