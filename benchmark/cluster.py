"""``python -m benchmark slurm``: submit runs to a SLURM cluster, one job per run.

Each (dataset, optimizer, seed) becomes one job rendered from
``benchmark/slurm/fit.sbatch``: DDP over ``--nodes`` x ``--gpus`` (one task per GPU,
started by ``srun``), ``--signal=SIGUSR1@90`` and ``--requeue`` so that a preempted or
timed-out job checkpoints, requeues itself and resumes. The rendered script is kept in
the run directory (``<runs-dir>/<dataset>/<optimizer>/seed<seed>/job.sbatch``); finished
runs (with ``final.json``) are not submitted again. SLURM schedules the jobs over the
cluster's nodes; ``python -m benchmark report <runs-dir>`` builds the table afterwards.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from string import Template

from .cli import parse_with_extra
from .grid import DATASETS, DEFAULT_OPTIMIZERS, config_stack
from .tasks import run_directory

__all__ = ["main", "render"]

TEMPLATE = Path(__file__).parent / "slurm" / "fit.sbatch"


def render(
    *,
    dataset: str,
    optimizer: str,
    seed: int,
    run_dir: Path,
    nodes: int,
    gpus: int,
    cpu_tasks: int = 1,
    cpus_per_task: int,
    time: str,
    data_dir: str | None,
    preset: str,
    directives: list[str],
    extra: list[str],
    python: str,
    workdir: Path,
) -> str:
    """The sbatch script of one run."""
    args = [a for path in config_stack(dataset, optimizer, preset) for a in ("--config", str(path))]
    args += ["--seed_everything", str(seed), "--run.dir", str(run_dir)]
    tasks = gpus or cpu_tasks
    args += ["--trainer.accelerator", "gpu" if gpus else "cpu", "--trainer.num_nodes", str(nodes), "--trainer.devices", str(tasks)]
    if nodes * tasks > 1:
        args += ["--trainer.strategy", "ddp"]
    if data_dir:
        args += ["--data.init_args.data_dir", data_dir]
    args += [*extra, "--ckpt_path", "last"]
    return Template(TEMPLATE.read_text()).substitute(
        job_name=f"clipbench-{dataset}-{optimizer}-s{seed}",
        nodes=nodes,
        tasks_per_node=gpus or cpu_tasks,
        gpu_directive=f"#SBATCH --gpus-per-node={gpus}" if gpus else "# (CPU job: no GPUs requested)",
        cpus_per_task=cpus_per_task,
        time=time,
        run_dir=shlex.quote(str(run_dir)),
        extra_directives="\n".join(f"#SBATCH {d}" for d in directives),
        workdir=shlex.quote(str(workdir)),
        python=shlex.quote(python),
        fit_args=shlex.join(args),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark slurm",
        description=__doc__.split("\n\n")[0],
        epilog="Arguments after -- go to every `python -m benchmark fit`.",
    )
    parser.add_argument("--datasets", nargs="+", default=["imagenet"], choices=DATASETS)
    parser.add_argument("--optimizers", nargs="+", default=list(DEFAULT_OPTIMIZERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--data-dir", default=None, help="root of the real dataset (required unless --preset bench)")
    parser.add_argument("--preset", choices=("full", "bench"), default="full")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=1, help="GPUs per node, one task each (0: a CPU job)")
    parser.add_argument("--cpu-tasks", type=int, default=1, help="with --gpus 0: processes per node (DDP over gloo)")
    parser.add_argument("--cpus-per-task", type=int, default=8, help="DataLoader workers per GPU need these")
    parser.add_argument("--time", default="24:00:00", help="job time limit; longer runs requeue themselves")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--account", default=None)
    parser.add_argument("--sbatch", action="append", default=[], help="extra #SBATCH directive, e.g. --sbatch=--qos=high")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--python", default=sys.executable, help="interpreter on the compute nodes")
    parser.add_argument("--dry-run", action="store_true", help="write the scripts and print them, submit nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_with_extra(build_parser(), argv)
    if args.preset == "full" and not args.data_dir:
        print("error: --data-dir is required with --preset full (the real dataset's root)", file=sys.stderr)
        return 2
    if args.nodes < 1 or args.gpus < 0 or args.cpu_tasks < 1:
        print("error: --nodes and --cpu-tasks must be >= 1, --gpus >= 0", file=sys.stderr)
        return 2
    if not args.dry_run and shutil.which("sbatch") is None:
        print("error: sbatch not found on PATH (run on a SLURM login node, or use --dry-run)", file=sys.stderr)
        return 2
    directives = [f"--partition={args.partition}"] * bool(args.partition) + [f"--account={args.account}"] * bool(args.account)
    directives += args.sbatch
    submitted = 0
    for dataset in args.datasets:
        for optimizer in args.optimizers:
            for seed in args.seeds:
                run_dir = run_directory(args.runs_dir, dataset, optimizer, seed).resolve()
                if (run_dir / "final.json").exists():
                    print(f"done already: {run_dir}")
                    continue
                script = render(
                    dataset=dataset, optimizer=optimizer, seed=seed, run_dir=run_dir, nodes=args.nodes, gpus=args.gpus,
                    cpu_tasks=args.cpu_tasks, cpus_per_task=args.cpus_per_task, time=args.time, data_dir=args.data_dir, preset=args.preset,
                    directives=directives, extra=args.extra, python=args.python, workdir=Path.cwd(),
                )
                run_dir.mkdir(parents=True, exist_ok=True)
                path = run_dir / "job.sbatch"
                path.write_text(script)
                if args.dry_run:
                    print(f"# {path}\n{script}")
                    continue
                result = subprocess.run(["sbatch", str(path)], capture_output=True, text=True)
                if result.returncode != 0:
                    print(f"error: sbatch {path} failed: {result.stderr.strip()}", file=sys.stderr)
                    return 1
                print(f"{dataset}/{optimizer}/seed{seed}: {result.stdout.strip()}")
                submitted += 1
    if not args.dry_run:
        print(f"submitted {submitted} job(s); when they finish: python -m benchmark report {args.runs_dir}")
    return 0
