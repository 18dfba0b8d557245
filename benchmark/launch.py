"""Starting ``python -m benchmark <command>`` processes for the grid and the tuner.

Every run is its own process (a crash, a leak or a global setting of one run cannot touch
the next), started one of two ways:

- ``exec``: a new interpreter (``subprocess.Popen``), for anything;
- ``fork``: a fork of a server process that has imported torch, Lightning, torchmetrics and
  clipbench once (the standard library's ``multiprocessing`` *forkserver*). Importing that
  stack costs about 8 s of CPU per process on the 2-core development machine, as much as a
  whole embedded language-model run; ``make bench`` and ``make tune`` start 48 and 96 such
  runs. The server only imports (no tensor is computed, no thread pool or CUDA context
  exists), so each child starts as a fresh interpreter would, without the imports. Used for
  single-process runs only: a DDP run's launcher re-executes its own command line, which a
  forked child does not have.

A child gets exactly the environment it is given, writes its output to its log, and sets
torch's intra-op threads from ``OMP_NUM_THREADS`` (the OpenMP runtime read that variable
when the server loaded it, before the child's value existed).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Protocol

__all__ = ["PRELOAD", "Started", "forkable", "start"]

#: What the fork server imports before it forks any run.
PRELOAD = ["torch", "torchvision", "torchmetrics", "pytorch_lightning", "benchmark.cli", "benchmark.lightning_cli", "models", "datamodules", "optim"]


class Started(Protocol):
    """A started run, as the grid and the tuner wait on it (``subprocess.Popen``'s shape)."""

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...


def forkable(command: list[str]) -> bool:
    """Whether ``command`` is a ``python -m benchmark ...`` of this interpreter (can be forked)."""
    return command[:3] == [sys.executable, "-m", "benchmark"]


@functools.cache
def _server() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _child(argv: list[str], env: dict[str, str], log_path: str | None) -> None:
    """The forked run: ``python -m benchmark *argv`` in this process."""
    os.environ.clear()
    os.environ.update(env)
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    import torch

    from benchmark import cli

    if env.get("OMP_NUM_THREADS", "").isdigit():
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    sys.argv = [str(Path(cli.__file__).with_name("__main__.py")), *argv]
    code = cli.main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class _Forked:
    def __init__(self, process: multiprocessing.process.BaseProcess):
        self._process = process

    def poll(self) -> int | None:
        return self._process.exitcode

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def terminate(self) -> None:
        self._process.terminate()

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        return self._process.exitcode


def start(command: list[str], env: dict[str, str], log: IO | None, *, fork: bool = False) -> Started:
    """Start ``command`` with environment ``env``, its stdout and stderr to ``log`` (None:
    inherited). With ``fork`` and a :func:`forkable` command, a fork of the preloaded
    server; otherwise a new interpreter."""
    if not (fork and forkable(command)):
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT if log else None)
    if log is not None:
        log.flush()
    process = _server().Process(target=_child, args=(command[3:], dict(env), log.name if log is not None else None), daemon=False)
    process.start()
    return _Forked(process)
