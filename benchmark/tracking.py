"""Experiment tracking: Weights & Biases (online when it can be, offline otherwise) + CSV.

W&B must never block a run. ``resolve_wandb_mode("auto")`` picks ``online`` only when
there are credentials and the server answers within two seconds, else ``offline``; an
online start that still fails falls back to offline with a warning. Offline runs land in
``<run dir>/wandb/offline-run-*`` and can be uploaded later with ``wandb sync``;
:func:`read_offline_run` reads one back (config, history, summary) for reports.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import secrets
import socket
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

__all__ = ["OfflineRun", "WANDB_MODES", "make_loggers", "read_metrics_csv", "read_offline_run", "resolve_wandb_mode"]

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")
_ID_FILE = "wandb_run.json"


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, port: int = 443, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_wandb_mode(requested: str = "auto") -> str:
    """``online``, ``offline`` or ``disabled``.

    ``auto`` honours ``WANDB_MODE`` when set, else goes online only with credentials
    (``WANDB_API_KEY`` or a netrc entry from ``wandb login``) and a reachable server.
    """
    if requested not in WANDB_MODES:
        raise ValueError(f"Invalid wandb mode: {requested!r} (must be one of {', '.join(WANDB_MODES)})")
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env:
        return {"dryrun": "offline", "run": "online", "disabled": "disabled"}.get(env, env)
    if not _has_credentials():
        return "offline"
    return "online" if _reachable(_wandb_host()) else "offline"


def _env_global_zero() -> bool:
    """Whether this process is global rank 0, from the launchers' variables.

    Read before the Trainer exists (so before Lightning sets its own rank): torchrun sets
    RANK, srun SLURM_PROCID, Lightning's launcher LOCAL_RANK (and NODE_RANK per node).
    """
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        if int(os.environ.get(key, "0") or 0) != 0:
            return False
    return True


def _quiet_offline_env() -> None:
    # Offline W&B still reports errors to Sentry over the network unless told not to.
    os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    os.environ.setdefault("WANDB_SILENT", "true")


def make_loggers(
    run_dir: Path,
    *,
    mode: str,
    project: str,
    group: str,
    name: str,
    tags: list[str],
    config: dict[str, Any],
) -> list:
    """A CSV logger and, unless disabled, a WandbLogger.

    CSV: each launch of the run (a first start, then every resume) writes its own
    ``run_dir/csv/<segment>/metrics.csv`` (Lightning's CSV writer empties a directory it
    reuses); :func:`read_metrics_csv` joins the segments.

    W&B: the run id is kept in ``run_dir/wandb_run.json``: a restarted run resumes the
    same W&B run when online; offline runs cannot be resumed, so a restart writes a new
    offline run whose config names the run it continues (``resumed_from``), in the same
    group.
    """
    from pytorch_lightning.loggers import CSVLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    segment = len(list((run_dir / "csv").glob("[0-9]*")))
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="csv", version=str(segment))]
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return loggers
    _quiet_offline_env()
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if not _env_global_zero():
        # Ranks > 0 (started by srun, torchrun or Lightning's launcher) never create a W&B
        # run; the logger only hands them Lightning's dummy experiment.
        loggers.append(WandbLogger(project=project, group=group, name=name, save_dir=str(run_dir), mode="disabled"))
        return loggers
    id_file = run_dir / _ID_FILE
    previous = json.loads(id_file.read_text()) if id_file.exists() else None
    config = dict(config)
    kwargs: dict[str, Any] = {}
    if previous and mode == "online" and previous.get("mode") == "online":
        kwargs.update(id=previous["id"], resume="allow")
    elif previous:
        config["resumed_from"] = previous["id"]
        name = f"{name}-restart{previous.get('restarts', 0) + 1}"
    run_id = kwargs.get("id") or secrets.token_hex(4)
    restarts = (previous.get("restarts", 0) + 1) if previous else 0
    id_file.write_text(json.dumps({"id": run_id, "mode": mode, "restarts": restarts}))

    def build(mode: str):
        return WandbLogger(
            project=project,
            group=group,
            name=name,
            tags=tags,
            save_dir=str(run_dir),
            id=run_id,
            mode=mode,
            config=config,
            settings=wandb.Settings(init_timeout=60, silent=True),
            **{k: v for k, v in kwargs.items() if k != "id"},
        )

    logger = build(mode)
    if mode == "online":
        try:
            logger.experiment  # start now, so a failure is caught here, not mid-training
        except Exception as err:  # noqa: BLE001 - any failure to reach W&B means: go offline
            warnings.warn(f"W&B online start failed ({err}); logging offline to {run_dir}/wandb instead")
            logger = build("offline")
    loggers.append(logger)
    return loggers


def read_metrics_csv(run_dir: str | os.PathLike) -> list[dict[str, str]]:
    """The CSV rows of a run, its segments joined in order; a step logged again after a
    resume keeps the later segment's values."""
    import csv

    segments = sorted((Path(run_dir) / "csv").glob("[0-9]*/metrics.csv"), key=lambda p: int(p.parent.name))
    rows: list[dict[str, str]] = []
    for path in segments:
        with path.open() as f:
            new = list(csv.DictReader(f))
        resumed_at = min((int(r["step"]) for r in new if r.get("step")), default=None)
        if resumed_at is not None:
            rows = [r for r in rows if not r.get("step") or int(r["step"]) < resumed_at]
        rows += new
    return rows


# -- reading offline runs back ---------------------------------------------------------

_BLOCK = 32768  # the .wandb transaction log is a LevelDB-style log: 32 KiB blocks
_HEADER = 7  # ":W&B" + magic (2) + version (1); each record: crc (4) + length (2) + type (1)


@dataclass
class OfflineRun:
    """What an offline W&B run recorded: its config, history rows and final summary."""

    path: Path
    run_id: str = ""
    name: str = ""
    group: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _records(data: bytes):
    if data[:4] != b":W&B":
        raise ValueError("not a W&B transaction log (bad header)")
    pos, pending = _HEADER, b""
    while pos + 7 <= len(data):
        room = _BLOCK - pos % _BLOCK
        if room < 7:
            pos += room
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break  # unwritten tail of a preallocated block
        chunk, pos = data[pos : pos + length], pos + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def read_offline_run(path: str | os.PathLike) -> OfflineRun:
    """Read an offline run directory (``.../offline-run-*``) or its ``run-*.wandb`` file.

    Raises:
        FileNotFoundError: no ``run-*.wandb`` file there.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no W&B transaction log (run-*.wandb) in {path}")
    run = OfflineRun(path=path if path.is_dir() else path.parent)
    for raw in _records(files[0].read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id, run.name, run.group = record.run.run_id, record.run.display_name, record.run.run_group
            for item in record.run.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
    run.config.pop("_wandb", None)
    return run
