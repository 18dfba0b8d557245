"""DDP with real processes (gloo on CPU): 2 processes equal 1 with the same global batch,
for every registered optimizer; 2 "nodes" x 1 process rendezvous on localhost.

Lightning's "ddp" strategy re-runs the current command for the other ranks, which under
pytest would re-run pytest; so the runs are separate scripts, launched the way a user
launches them (plain python, or torchrun).
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optim import list_optimizers

SCRIPT = Path(__file__).with_name("ddp_script.py")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _run(commands: list[list[str]]) -> None:
    procs = [subprocess.Popen(c, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in commands]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]


def _torchrun(out: Path, nproc: int, nnodes: int, node_rank: int, port: int, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
        "--master_addr=127.0.0.1", f"--master_port={port}",
        str(SCRIPT), str(out), *extra,
    ]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    _run([[sys.executable, str(SCRIPT), str(out), "--devices", "1", "--global-batch", "8"]])
    return torch.load(out / "rank0.pt", weights_only=True)


def _close(a, b, tol=1e-6):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=tol)


def _close_sign_based(a, b, max_fraction=0.01):
    """Lion steps by sign(·): where a gradient is zero in exact arithmetic (attention's key
    bias: softmax ignores it) rounding decides the sign, and one process and two round
    differently. Every other coordinate must agree to 1e-6; those few may differ by whole
    sign flips, no more than 1% of the coordinates."""
    flipped = total = 0
    for x, y in zip(a, b):
        diff = (x - y).abs()
        total += diff.numel()
        flipped += int((diff > 1e-6).sum())
    assert flipped <= max_fraction * total, f"{flipped} of {total} coordinates differ"


def test_two_processes_equal_one_for_every_optimizer(single, tmp_path):
    _run([_torchrun(tmp_path, 2, 1, 0, _free_port(), ["--devices", "2", "--global-batch", "8"])])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert set(single) == set(list_optimizers()) == set(ranks[0])
    for name in single:
        assert ranks[0][name]["world_size"] == 2
        # The all-reduced gradient is the single process's gradient: same trajectory.
        _close(ranks[0][name]["params"], single[name]["params"])
        _close(ranks[0][name]["evaluation_point"], single[name]["evaluation_point"])
        # Clipping sees the same global gradient on every rank: identical state.
        for key, value in ranks[0][name]["global_state"].items():
            assert torch.equal(value, ranks[1][name]["global_state"][key]), (name, key)
            torch.testing.assert_close(value, single[name]["global_state"][key], rtol=1e-5, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(ranks[0][name]["params"], ranks[1][name]["params"]))
        # Validation on 9 samples across 2 ranks counts each sample once.
        for metric in ("val/top1", "val/loss"):
            assert ranks[0][name]["val"][metric] == pytest.approx(single[name]["val"][metric], abs=1e-6), metric
    clipped = single["clipped_sgd"]["global_state"]
    assert clipped["clipped_steps"].item() > 0  # the comparison covered clipped steps


def test_two_nodes_one_process_each_on_localhost(single, tmp_path):
    port = _free_port()
    extra = ["--devices", "1", "--num-nodes", "2", "--global-batch", "8"]
    _run([_torchrun(tmp_path, 1, 2, node, port, extra) for node in (0, 1)])
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for name in single:
        assert ranks[0][name]["world_size"] == 2
        _close(ranks[0][name]["params"], single[name]["params"])
        assert all(torch.equal(a, b) for a, b in zip(ranks[0][name]["params"], ranks[1][name]["params"]))


def test_two_processes_equal_one_for_the_language_model(tmp_path):
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    single_dir.mkdir(), ddp_dir.mkdir()
    task = ["--task", "language_model", "--global-batch", "8"]
    _run([[sys.executable, str(SCRIPT), str(single_dir), "--devices", "1", *task]])
    _run([_torchrun(ddp_dir, 2, 1, 0, _free_port(), ["--devices", "2", *task])])
    single = torch.load(single_dir / "rank0.pt", weights_only=True)
    ranks = [torch.load(ddp_dir / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert set(single) == set(list_optimizers()) == set(ranks[0])
    for name in single:
        if name == "lion":
            _close_sign_based(ranks[0][name]["params"], single[name]["params"])
        else:
            _close(ranks[0][name]["params"], single[name]["params"])
            _close(ranks[0][name]["evaluation_point"], single[name]["evaluation_point"])
        assert all(torch.equal(a, b) for a, b in zip(ranks[0][name]["params"], ranks[1][name]["params"]))
        # 9 validation sequences over 2 ranks: each byte counted once in val/bpc and val/loss.
        for metric in ("val/bpc", "val/loss"):
            assert ranks[0][name]["val"][metric] == pytest.approx(single[name]["val"][metric], abs=1e-6), metric
        assert single[name]["val"]["val/bpc"] == pytest.approx(single[name]["val"]["val/loss"] / math.log(2), rel=1e-6)
