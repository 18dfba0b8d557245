"""``python -m benchmark run``: a grid of runs (dataset × optimizer × seed) and its report.

Each run is its own process (``python -m benchmark fit`` with a stack of config
fragments), writing into ``<runs-dir>/<dataset>/<optimizer>/seed<seed>/``. The grid is
resumable: a run whose ``final.json`` exists is not redone, and an unfinished one resumes
from its last checkpoint (``--ckpt_path last``), as long as the run directory was made by
the same settings (config contents and flags, recorded in ``grid_fingerprint.txt``); one
made by other settings is moved aside to ``<dir>.superseded-<n>`` and the run starts
over. Runs are spread over the visible GPUs, one GPU each (``--parallel``); on CPU they run one after
another unless ``--parallel N`` asks for N at a time (each then gets cores/N intra-op threads). At the end the report
(``summary.md``, ``results.json``, plots) is written into ``--out``.

Presets:
    bench   the embedded datasets with small budgets (``<dataset>/embedded*.yaml``):
            what ``make bench`` runs, minutes on a laptop CPU.
    full    the reference protocols on real data (``--data-dir`` required).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import launch
from .cli import parse_with_extra
from .report import build_report, load_runs
from .tasks import CONFIG_DIR, dataset_names, get_task, run_directory
from .tracking import WANDB_MODES

__all__ = ["DATASETS", "GridRun", "main", "plan"]

DATASETS = dataset_names()
DEFAULT_OPTIMIZERS = ("sgd", "adam", "clipped_sgd", "clipped_sstm")


FINGERPRINT = "grid_fingerprint.txt"


@dataclass
class GridRun:
    dataset: str
    optimizer: str
    seed: int
    run_dir: Path
    command: list[str]
    env: dict[str, str]
    fingerprint: str = ""

    @property
    def made_by_these_settings(self) -> bool:
        record = self.run_dir / FINGERPRINT
        return record.exists() and record.read_text().strip() == self.fingerprint

    @property
    def finished(self) -> bool:
        """``final.json`` written, by a run of these very settings."""
        return (self.run_dir / "final.json").exists() and self.made_by_these_settings

    def set_aside_if_stale(self) -> Path | None:
        """Move the run directory aside when it holds a run of other settings.

        A run directory records the fingerprint of what produced it (the contents of its
        config fragments and the command's other arguments). When the configs or flags
        change, the old run must neither count as finished nor be resumed with the new
        settings; it is renamed ``<dir>.superseded-<n>`` (never deleted). Returns the new
        name, or None when nothing was moved.
        """
        if not self.run_dir.exists() or not any(self.run_dir.iterdir()) or self.made_by_these_settings:
            return None
        n = 1
        while (target := self.run_dir.with_name(f"{self.run_dir.name}.superseded-{n}")).exists():
            n += 1
        self.run_dir.rename(target)
        return target

    @property
    def label(self) -> str:
        return f"{self.dataset}/{self.optimizer}/seed{self.seed}"

    def record_fingerprint(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / FINGERPRINT).write_text(self.fingerprint + "\n")


def fingerprint(stack: list[Path], args: list[str]) -> str:
    """SHA-256 of the config fragments' contents (in order) and the other arguments."""
    digest = hashlib.sha256()
    for path in stack:
        digest.update(path.read_bytes() + b"\0")
    digest.update("\0".join(args).encode())
    return digest.hexdigest()


def config_stack(dataset: str, optimizer: str, preset: str) -> list[Path]:
    """The YAML fragments of one run, in override order.

    Raises:
        FileNotFoundError: no config for this dataset/optimizer (the message lists what exists).
    """
    folder = get_task(dataset).config_dir
    optimizer_file = folder / f"{optimizer}.yaml"
    if not optimizer_file.exists():
        available = sorted(p.stem for p in folder.glob("*.yaml") if p.stem not in ("data", "model") and not p.stem.startswith(("embedded", "tuned_")))
        raise FileNotFoundError(
            f"no optimizer config {optimizer_file}; configs exist for: {', '.join(available)}. "
            "Add one (a model.init_args.optimizer_args fragment) to benchmark other optimizers."
        )
    stack = [CONFIG_DIR / "trainer.yaml", folder / "data.yaml", folder / "model.yaml", optimizer_file]
    if preset == "bench":
        stack.append(folder / "embedded.yaml")
    # Settings written by `python -m benchmark tune --install` (embedded_* for the bench).
    tuned = folder / (f"embedded_{optimizer}.yaml" if preset == "bench" else f"tuned_{optimizer}.yaml")
    if tuned.exists():
        stack.append(tuned)
    return stack


def _data_dirs(values: list[str], datasets: list[str]) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if sep and name in DATASETS:
            out[name] = path
        elif len(datasets) == 1:
            out[datasets[0]] = value
        else:
            raise SystemExit(f"error: --data-dir {value!r}: with several datasets write DATASET=PATH")
    return out


def plan(args: argparse.Namespace) -> list[GridRun]:
    """The runs of the grid, in execution order."""
    data_dirs = _data_dirs(args.data_dir or [], args.datasets)
    if args.preset == "full":
        missing = [d for d in args.datasets if d not in data_dirs]
        if missing:
            raise SystemExit(f"error: --preset full needs --data-dir for {', '.join(missing)} (the real dataset's root)")
    runs = []
    for dataset in args.datasets:
        for optimizer in args.optimizers:
            stack = config_stack(dataset, optimizer, args.preset)
            for seed in args.seeds:
                run_dir = run_directory(args.runs_dir, dataset, optimizer, seed)
                cmd = [sys.executable, "-m", "benchmark", "fit"]
                for path in stack:
                    cmd += ["--config", str(path)]
                settings = ["--seed_everything", str(seed)]
                cmd += [*settings, "--run.dir", str(run_dir), "--run.wandb", args.wandb]
                if dataset in data_dirs:
                    cmd += ["--data.init_args.data_dir", data_dirs[dataset]]
                if args.epochs is not None:
                    cmd += ["--trainer.max_epochs", str(args.epochs)]
                if args.devices is not None:
                    cmd += ["--trainer.devices", str(args.devices)]
                if args.nodes is not None:
                    cmd += ["--trainer.num_nodes", str(args.nodes)]
                if args.accelerator is not None:
                    cmd += ["--trainer.accelerator", args.accelerator]
                cmd += list(args.extra) + ["--ckpt_path", "last"]
                # What decides the result: not the interpreter, the W&B mode or the paths.
                settings += cmd[cmd.index("--run.wandb") + 2 :]
                runs.append(GridRun(dataset, optimizer, seed, run_dir, cmd, {}, fingerprint(stack, settings)))
    return runs


def _gpu_slots(parallel: str, devices: int | None) -> list[str | None]:
    """One entry per concurrent run: the CUDA_VISIBLE_DEVICES it gets (None: inherit)."""
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA means CPU
        gpus = 0
    if parallel == "auto":
        count = gpus if gpus > 1 and (devices or 1) == 1 else 1
    else:
        count = max(1, int(parallel))
    if count == 1 or gpus == 0:
        return [None] * count
    return [str(i % gpus) for i in range(count)]


def cpu_threads(concurrent: int, env: dict[str, str]) -> dict[str, str]:
    """Intra-op threads per run when several runs share the CPU: its cores split evenly
    (at least 1), so that concurrent runs do not oversubscribe it. Nothing when one run
    has the machine, or when the user set ``OMP_NUM_THREADS`` already."""
    if concurrent <= 1 or "OMP_NUM_THREADS" in env:
        return {}
    threads = str(max(1, (os.cpu_count() or 1) // concurrent))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def run_env(gpu: str | None, concurrent: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one concurrent run: ours, unbuffered output, ``extra``, the GPU
    of its slot (``CUDA_VISIBLE_DEVICES``) and its share of the CPU (:func:`cpu_threads`)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra or {})}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env.update(cpu_threads(concurrent, env))
    return env


def execute(runs: list[GridRun], slots: list[str | None], verbose: bool, *, fork: bool = False) -> list[GridRun]:
    """Run the unfinished runs, ``len(slots)`` at a time; returns those that failed. With
    ``fork``, each run is a fork of a server that imported the stack once
    (:mod:`benchmark.launch`)."""
    from tqdm import tqdm

    for run in runs:
        moved = run.set_aside_if_stale()
        if moved is not None:
            print(f"{run.label}: {run.run_dir} was made with other configs or flags; moved to {moved}", file=sys.stderr)
    todo = [r for r in runs if not r.finished]
    done_before = len(runs) - len(todo)
    failed: list[GridRun] = []
    active: dict[int, tuple[GridRun, launch.Started, object]] = {}
    bar = tqdm(total=len(runs), initial=done_before, desc="grid", unit="run", dynamic_ncols=True)
    queue = list(todo)
    try:
        while queue or active:
            for slot, gpu in enumerate(slots):
                if slot in active or not queue:
                    continue
                run = queue.pop(0)
                run.record_fingerprint()
                log = None if verbose else open(run.run_dir / "stdout.log", "a")
                proc = launch.start(run.command, run_env(gpu, len(slots), run.env), log, fork=fork)
                active[slot] = (run, proc, log)
                bar.set_postfix_str(", ".join(r.label for r, _, _ in active.values()))
            time.sleep(0.5)
            for slot, (run, proc, log) in list(active.items()):
                if proc.poll() is None:
                    continue
                del active[slot]
                if log:
                    log.close()
                if proc.returncode != 0 or not run.finished:
                    failed.append(run)
                    tail = (run.run_dir / "stdout.log").read_text()[-2000:] if not verbose else ""
                    bar.write(f"FAILED {run.label} (exit {proc.returncode}); log: {run.run_dir / 'stdout.log'}\n{tail}")
                bar.update(1)
    finally:
        for _, proc, _ in active.values():
            proc.terminate()
        bar.close()
    return failed


def probe_noise(args: argparse.Namespace, out: Path, slots: list[str | None], *, fork: bool = False) -> None:
    """Measure each dataset's gradient noise at initialisation (``python -m benchmark
    noise --train-steps 0``), once per dataset: every optimizer starts from the same
    weights for a seed. ``len(slots)`` probes run at a time, each logging to
    ``out/<dataset>.log``. Results accumulate in ``out``; datasets already there are skipped."""
    data_dirs = _data_dirs(args.data_dir or [], args.datasets)
    queue = []
    for dataset in args.datasets:
        if (out / dataset).exists():
            continue
        cmd = [sys.executable, "-m", "benchmark", "noise", "--train-steps", "0", "--seed", str(args.seeds[0])]
        cmd += ["--num-batches", str(args.noise_batches), "--out", str(out), "--no-progress"]
        if args.preset == "bench":
            cmd += ["--datasets", dataset]
        else:
            for path in config_stack(dataset, "sgd", "full"):
                cmd += ["--config", str(path)]
            cmd += ["--", "--data.init_args.data_dir", data_dirs[dataset]]
        queue.append((dataset, cmd))
    if not queue:
        return
    out.mkdir(parents=True, exist_ok=True)
    print(f"gradient noise at initialisation: {', '.join(d for d, _ in queue)} ...", flush=True)
    active: dict[int, tuple[str, launch.Started, object]] = {}
    while queue or active:
        for slot, gpu in enumerate(slots):
            if slot in active or not queue:
                continue
            dataset, cmd = queue.pop(0)
            log = open(out / f"{dataset}.log", "w")
            active[slot] = (dataset, launch.start(cmd, run_env(gpu, len(slots)), log, fork=fork), log)
        time.sleep(0.5)
        for slot, (dataset, proc, log) in list(active.items()):
            if proc.poll() is None:
                continue
            del active[slot]
            log.close()
            if proc.poll() != 0:
                tail = (out / f"{dataset}.log").read_text()[-1500:]
                print(f"warning: the noise probe of {dataset} failed (exit {proc.poll()}); the report will lack it:\n{tail}", file=sys.stderr)


class _RenamedFlag(argparse.Action):
    """``--noise`` was this command's probe switch; it is ``--probe-noise`` now (in ``convex``
    ``--noise`` is the noise law). A clear error instead of argparse's prefix match with
    ``--noise-batches``."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser.error("--noise was renamed --probe-noise (probe each dataset's gradient noise first)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark run",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every `python -m benchmark fit`, e.g. -- --trainer.max_steps 20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS, help="datasets (tasks) to run (benchmark/tasks.py)")
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULT_OPTIMIZERS), help="registry names, each needs benchmark/configs/<dataset>/<name>.yaml")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds (initial weights and data order; make bench: 0 1 2, the full protocol 5 seeds)")
    parser.add_argument("--preset", choices=("bench", "full"), default="bench", help="bench: embedded data, small budgets; full: reference protocol on real data")
    parser.add_argument("--data-dir", action="append", help="root of the real dataset (DATASET=PATH with several datasets)")
    parser.add_argument("--epochs", type=int, default=None, help="override trainer.max_epochs")
    parser.add_argument("--devices", default=None, help="devices per run (DDP when > 1)")
    parser.add_argument("--nodes", type=int, default=None, help="nodes per run")
    parser.add_argument("--accelerator", default=None, help="cpu, gpu, auto (default: the configs' auto)")
    parser.add_argument("--parallel", default="auto", help="concurrent runs; auto = one per visible GPU when each run uses one device")
    parser.add_argument("--runs-dir", default="runs", help="where run directories go")
    parser.add_argument("--out", default=None, help="report directory (default: results/<timestamp>)")
    parser.add_argument("--wandb", default="auto", choices=WANDB_MODES)
    parser.add_argument("--probe-noise", action="store_true", help="probe each dataset's gradient noise at initialisation first and put the table in the report")
    parser.add_argument("--noise", nargs=0, action=_RenamedFlag, help=argparse.SUPPRESS)
    parser.add_argument("--noise-batches", type=int, default=30, help="mini-batches per noise probe (K)")
    parser.add_argument("--baseline", default="sgd", help="optimizer the report's paired differences are taken against")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--verbose", action="store_true", help="show each run's output instead of writing stdout.log")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_with_extra(build_parser(), argv)
    runs = plan(args)
    if args.dry_run:
        for run in runs:
            print(("# done: " if run.finished else "") + shlex.join(run.command))
        return 0
    start = time.monotonic()
    out = Path(args.out or f"results/{time.strftime('%Y%m%d-%H%M%S')}")
    slots = _gpu_slots(args.parallel, int(args.devices) if args.devices else None)
    # Short single-process runs: fork them from a server that imported the stack once.
    fork = args.preset == "bench" and args.devices is None and args.nodes is None
    if args.probe_noise:
        probe_noise(args, out / "noise", slots, fork=fork)
    failed = execute(runs, slots, args.verbose, fork=fork)
    finished = [r.run_dir for r in runs if r.finished]
    if not finished:
        print("error: no run finished; see the logs above", file=sys.stderr)
        return 1
    minutes = (time.monotonic() - start) / 60
    notes = (
        f"Grid: datasets {', '.join(args.datasets)}; optimizers {', '.join(args.optimizers)}; seeds {args.seeds}; "
        f"preset `{args.preset}`; {len(finished)}/{len(runs)} runs finished; this invocation took {minutes:.1f} min.\n"
    )
    build_report(load_runs(finished), out, notes=notes, noise=out / "noise" if args.probe_noise else None, baseline=args.baseline)
    print((out / "summary.md").read_text().split("\n\nThe thesis's figures")[0])
    print(f"\nwrote {out}/summary.md, results.json and plots ({minutes:.1f} min)")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(r.label for r in failed)}", file=sys.stderr)
        return 1
    return 0
