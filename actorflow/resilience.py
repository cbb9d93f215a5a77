"""Resilience files: what a worker needs to rejoin its cluster, and checkpoint data.

All files of a worker live in its ``--resilience-dir`` and are named after the app
and the worker: ``actorflow-<app>-<worker>.<what>``. Every write is atomic
(temporary file, fsync, rename, fsync of the folder): a crash never leaves a
half-written file that the next start would trust.

- ``.cluster.json``: cluster identity, this worker's name and role, the worker list
  with control addresses, the worker count, the partition count.
- ``.checkpoint.json`` (initializer): the last completed checkpoint, the epoch of
  the current placement, and the owner tables (current, and at that checkpoint);
  ``.actors.pickle``: the addresses of the placed actors.
- ``.<stage>.cp<N>.state``: a state actor's per-key state at checkpoint N (pickle),
  split by partition when read (see :mod:`actorflow.runtime.partitions`), so that after
  a grow or shrink any worker can load any partition of it (through this worker's guard);
  ``.<stage>.cp<N>.offsets``: a source's per-stream offsets at checkpoint N (JSON).
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import re
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

PREFIX = "actorflow-"


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, whole."""
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "app"


def _safe_app(name: str) -> str:
    """An app's part of a file name: no "-", which separates it from the worker's part."""
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("._") or "app"


@dataclass(frozen=True)
class WorkerFiles:
    """The names of one worker's resilience files."""

    folder: str
    app: str
    worker: str

    @property
    def base(self) -> str:
        return os.path.join(self.folder, f"{PREFIX}{_safe_app(self.app)}-{_safe(self.worker)}")

    @property
    def cluster(self) -> str:
        return self.base + ".cluster.json"

    @property
    def checkpoint(self) -> str:
        return self.base + ".checkpoint.json"

    @property
    def actors(self) -> str:
        return self.base + ".actors.pickle"

    def snapshot(self, stage_id: str, checkpoint: int) -> str:
        return f"{self.base}.{_safe(stage_id)}.cp{checkpoint}.state"

    def offsets(self, stage_id: str, checkpoint: int) -> str:
        return f"{self.base}.{_safe(stage_id)}.cp{checkpoint}.offsets"

    def existing(self) -> list[str]:
        """Every file of this worker that exists now."""
        return sorted(glob.glob(glob.escape(self.base) + ".*"))

    def forget_before(self, stage_id: str, checkpoint: int) -> None:
        """Remove this stage's checkpoint files older than ``checkpoint``."""
        pattern = glob.escape(f"{self.base}.{_safe(stage_id)}.cp") + "*"
        for path in glob.glob(pattern):
            m = re.search(r"\.cp(\d+)\.(state|offsets)$", path)
            if m and int(m.group(1)) < checkpoint:
                try:
                    os.unlink(path)
                except OSError:
                    pass


@dataclass(frozen=True)
class ClusterRecord:
    """The ``.cluster.json`` file: enough to rejoin the cluster after a restart."""

    cluster_id: str
    app: str
    app_path: str
    worker: str
    initializer: bool
    control: str
    worker_count: int
    workers: list = field(default_factory=list)  # [[name, control], ...]
    partitions: int = 0
    state_actors: int = 1
    pid: int = 0  # the worker command of the incarnation that wrote this file
    pgid: int = 0  # its actor process group
    resized: bool = False  # grown or shrunk since it formed: worker_count beats the flag


@dataclass(frozen=True)
class ClusterState:
    """The initializer's view: last completed checkpoint, epoch, worker order, actors."""

    cluster_id: str
    checkpoint: int
    epoch: int
    workers: list = field(default_factory=list)  # worker names in placement order
    addresses: dict = field(default_factory=dict)  # (stage id, worker) -> ActorAddress
    tables: dict = field(default_factory=dict)  # stage id -> owner of each partition
    checkpoint_tables: dict = field(default_factory=dict)  # the tables at ``checkpoint``
    table_version: int = 0


def write_cluster(files: WorkerFiles, record: ClusterRecord) -> None:
    os.makedirs(files.folder, exist_ok=True)
    atomic_write(files.cluster, json.dumps(asdict(record), indent=1).encode())


def read_cluster(files: WorkerFiles) -> ClusterRecord | None:
    """The cluster file, or None if there is none; ValueError if it cannot be read."""
    try:
        with open(files.cluster, "rb") as f:
            data = json.loads(f.read())
        return ClusterRecord(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as exc:
        msg = f"{files.cluster} cannot be read ({exc})"
        raise ValueError(msg) from None


def record_resize(files: WorkerFiles, workers: list) -> ClusterRecord | None:
    """Rewrite the cluster file for the worker list after a grow or shrink."""
    record = read_cluster(files)
    if record is None:
        return None
    record = ClusterRecord(
        **{**asdict(record), "workers": workers, "worker_count": len(workers), "resized": True}
    )
    write_cluster(files, record)
    return record


def _picklable(value: Any) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # e.g. an actor address Thespian has not resolved yet
        return False
    return True


def write_state(files: WorkerFiles, state: ClusterState) -> None:
    kept = {
        group: {k: v for k, v in entries.items() if _picklable(v)}
        for group, entries in state.addresses.items()
    }
    atomic_write(files.actors, pickle.dumps(kept))
    plain = {
        "cluster_id": state.cluster_id,
        "checkpoint": state.checkpoint,
        "epoch": state.epoch,
        "workers": list(state.workers),
        "tables": {k: list(v) for k, v in state.tables.items()},
        "checkpoint_tables": {k: list(v) for k, v in state.checkpoint_tables.items()},
        "table_version": state.table_version,
    }
    atomic_write(files.checkpoint, json.dumps(plain).encode())


def read_state(files: WorkerFiles) -> ClusterState | None:
    try:
        with open(files.checkpoint, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        msg = f"{files.checkpoint} cannot be read ({exc})"
        raise ValueError(msg) from None
    addresses: dict = {}
    try:
        with open(files.actors, "rb") as f:
            addresses = pickle.loads(f.read())
    except (OSError, pickle.UnpicklingError, EOFError):
        pass  # the old actors cannot be retired; epochs still fence them
    for name in ("tables", "checkpoint_tables"):
        data[name] = {k: tuple(v) for k, v in data.get(name, {}).items()}
    return ClusterState(addresses=addresses, **data)


def checkpoint_file(path: str, checkpoint: int) -> str:
    """``path``, which restoring ``checkpoint`` needs; FileNotFoundError naming it if absent."""
    if not os.path.exists(path):
        msg = f"checkpoint {checkpoint}: {path} is missing"
        raise FileNotFoundError(msg)
    return path


def write_snapshot(path: str, states: dict[Any, Any]) -> None:
    atomic_write(path, pickle.dumps(states, protocol=pickle.HIGHEST_PROTOCOL))


def read_snapshot(path: str) -> dict[Any, Any]:
    with open(path, "rb") as f:
        return pickle.loads(f.read())


def write_offsets(path: str, offsets: dict[str, int]) -> None:
    atomic_write(path, json.dumps(offsets).encode())


def read_offsets(path: str) -> dict[str, int]:
    with open(path, "rb") as f:
        return {str(k): int(v) for k, v in json.loads(f.read()).items()}


def all_files(folder: str, app: str | None = None) -> list[str]:
    """Every actorflow resilience file in ``folder`` (of one app, if given)."""
    pattern = f"{PREFIX}{_safe_app(app)}-*" if app else f"{PREFIX}*"
    return sorted(
        p
        for p in glob.glob(os.path.join(glob.escape(folder), pattern))
        if re.search(r"\.(cluster\.json|checkpoint\.json|actors\.pickle|state|offsets)$", p)
    )


def clean(folder: str, app: str | None = None) -> list[str]:
    """Remove this folder's resilience files (of one app, if given); return their names."""
    removed = []
    for path in all_files(folder, app):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def remove_files(files: WorkerFiles) -> int:
    """Remove every file of one worker (it left the cluster); how many."""
    removed = 0
    for path in files.existing():
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    return removed


def stale_hint(folder: str, paths: list[str]) -> str:
    """How to get rid of files that belong to a cluster that is gone."""
    shown = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
    return (
        f"files from an earlier cluster: {shown}. If you mean to start a new cluster, "
        f"remove them first: actorflow clean --resilience-dir {folder}"
    )
