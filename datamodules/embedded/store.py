"""Where the embedded datasets live, and how they are generated atomically.

A dataset ``<name>`` lives in ``<root>/<name>/`` with a ``MANIFEST.json`` written last.
The generator writes into a temporary sibling folder, the manifest goes in, and only
then is the folder renamed into place, so a reader either sees a complete dataset or
none. A folder without a valid manifest (an interrupted run, a generator of another
version, files deleted by hand) is removed and generated again. An exclusive
``fcntl.flock`` on ``<root>/.<name>.lock`` serialises concurrent callers (DDP ranks,
parallel test workers): the first one generates, the others wait and then read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

try:  # POSIX only; without it concurrent first calls are not serialised.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["MANIFEST_NAME", "EmbeddedSpec", "embedded_root", "ensure_generated", "exclusive_lock", "is_complete"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "MANIFEST.json"
ENV_VAR = "CLIPBENCH_DATA_DIR"


@dataclass(frozen=True)
class EmbeddedSpec:
    """One embedded dataset: its folder name, generator and generator version.

    Attributes:
        name: folder name under the embedded root (``imagenet``, ``voc``, ``div2k``).
        version: bumped whenever the generator's output changes; an existing folder of
            another version is regenerated.
        generate: writes the complete dataset into the (empty) folder it is given.
        description: one line for logs and the manifest.
    """

    name: str
    version: int
    generate: Callable[[Path], None]
    description: str


def embedded_root() -> Path:
    """The folder holding the embedded datasets.

    Returns:
        ``$CLIPBENCH_DATA_DIR`` if set, else ``<repo root>/data/embedded`` (the repo root
        is the parent of the ``datamodules`` package; ``data/`` is git-ignored).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "data" / "embedded"


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder)) - int((folder / MANIFEST_NAME).is_file())


def is_complete(folder: Path, spec: EmbeddedSpec) -> bool:
    """Whether ``folder`` holds a finished dataset of ``spec``'s version.

    Args:
        folder: candidate dataset folder.
        spec: the dataset it should hold.

    Returns:
        True when the manifest is readable, names this dataset and version, and the
        number of files on disk equals the number it recorded.
    """
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return (
        manifest.get("name") == spec.name
        and manifest.get("version") == spec.version
        and manifest.get("num_files") == _count_files(folder)
    )


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on ``lock_path`` (created if missing) for the block:
    concurrent processes on one machine or a shared filesystem take turns."""
    with open(lock_path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove(folder: Path, root: Path) -> None:
    # Rename first so a half-deleted tree is never mistaken for the dataset.
    trash = Path(tempfile.mkdtemp(prefix=f".{folder.name}.trash-", dir=root))
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)


def ensure_generated(spec: EmbeddedSpec, root: Path | None = None) -> Path:
    """Return the folder of an embedded dataset, generating it first if needed.

    Safe to call from several processes at once and after an interrupted generation.

    Args:
        spec: which dataset.
        root: the embedded root (default :func:`embedded_root`).

    Returns:
        ``<root>/<spec.name>``, complete.

    Raises:
        OSError: the root is not writable (the message names it and the env variable
            that moves it).
    """
    root = embedded_root() if root is None else Path(root)
    target = root / spec.name
    if is_complete(target, spec):
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"cannot create the embedded-data folder {root} ({exc.strerror}); "
            f"set {ENV_VAR} to a writable folder"
        ) from exc
    with exclusive_lock(root / f".{spec.name}.lock"):
        if is_complete(target, spec):  # another process finished while we waited
            return target
        for stale in root.glob(f".{spec.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            log.warning("%s is incomplete or from another generator version; regenerating it", target)
            _remove(target, root)
        log.info("generating the embedded %s dataset in %s", spec.name, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=root))
        try:
            start = time.perf_counter()
            spec.generate(tmp)
            manifest = {
                "name": spec.name,
                "version": spec.version,
                "description": spec.description,
                "num_files": _count_files(tmp),
                "seconds": round(time.perf_counter() - start, 3),
            }
            with open(tmp / MANIFEST_NAME, "w") as handle:
                json.dump(manifest, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared root from others
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
