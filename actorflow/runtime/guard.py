"""The worker guard: ends every process of a worker when its command is gone, and
answers the topology actor's heartbeats for its worker.

Thespian's admin daemonizes (setsid, double fork) and outlives the command
that started it. All of a worker's actor processes share the admin's process
group, so the guard, one of them, can end them all when the worker command
dies without cleaning up (SIGKILL, a crash).

The heartbeat is answered by an actor of the worker, not by its kernel, so a
worker that is stopped (SIGSTOP) or cut off misses it and is fenced.

The guard also serves its worker's checkpoint snapshots to the new owners of
partitions after a grow or shrink, rewrites the worker's cluster file when the
cluster changes size, and, when the worker leaves, removes its files and stops it.
"""

from __future__ import annotations

import logging
import os
import signal
from datetime import timedelta
from typing import Any

from thespian.actors import WakeupMessage

from actorflow.messages import (
    ClusterChanged,
    Fenced,
    FetchPartitions,
    GuardReady,
    GuardWorker,
    Heartbeat,
    HeartbeatAck,
    LeaveCluster,
    PartitionData,
    StopWorker,
)
from actorflow.resilience import read_snapshot, record_resize, remove_files
from actorflow.runtime.partitions import PartitionIndex, pick
from actorflow.runtime.stage import PlacedActor

log = logging.getLogger("actorflow.guard")

POLL = timedelta(milliseconds=500)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, waiting for its parent to reap it, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class WorkerGuard(PlacedActor):
    """Polls the worker command's pid; kills the worker's process group once it is gone."""

    pid = 0
    worker = ""
    uid = ""
    files: Any = None

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        if isinstance(msg, Heartbeat):
            self.send(sender, HeartbeatAck(msg.seq, self.worker, self.uid))
        elif isinstance(msg, GuardWorker):
            self.pid, self.worker, self.uid = msg.pid, msg.worker, msg.uid
            self.files = msg.files
            self.send(sender, GuardReady(os.getpgid(0)))
            self.wakeupAfter(POLL)
        elif isinstance(msg, Fenced):
            log.warning(
                "worker %s was fenced: %s; its actors of an older epoch are retired and it "
                "takes its place again at epoch %d",
                self.worker,
                msg.reason,
                msg.epoch,
            )
        elif isinstance(msg, FetchPartitions):
            self.send(sender, self.partitions(msg))
        elif isinstance(msg, ClusterChanged) and self.files is not None:
            record_resize(self.files, [list(w) for w in msg.workers])
            log.info(
                "guard: worker %s's cluster file now lists %d workers",
                self.worker,
                len(msg.workers),
            )
        elif isinstance(msg, LeaveCluster) and self.pid:
            removed = remove_files(self.files) if self.files else 0
            log.info(
                "guard: worker %s leaves the cluster (%s); removed its %d files; stopping it",
                self.worker,
                msg.reason,
                removed,
            )
            os.kill(self.pid, signal.SIGTERM)
        elif isinstance(msg, StopWorker) and self.pid:
            log.info("guard: stopping worker command %d (actorflow shutdown)", self.pid)
            os.kill(self.pid, signal.SIGTERM)
        elif isinstance(msg, WakeupMessage) and self.pid:
            if alive(self.pid):
                self.wakeupAfter(POLL)
            else:
                log.error("guard: worker command %d is gone; ending its actor processes", self.pid)
                os.killpg(os.getpgid(0), signal.SIGKILL)

    def partitions(self, msg: FetchPartitions) -> PartitionData:
        """The asked partitions of this worker's snapshot (a local file read)."""
        answer = PartitionData(msg.stage_id, msg.checkpoint, self.worker, msg.epoch)
        files = self.files
        if files is None or msg.files.base != files.base:
            error = f"worker {self.worker!r} holds no files {msg.files.base}.*"
            return PartitionData(**{**answer.__dict__, "error": error})
        try:
            data = read_snapshot(files.snapshot(msg.stage_id, msg.checkpoint))
            part = pick(data, msg.partitions, PartitionIndex(msg.count), msg.keyed_in)
        except Exception as exc:
            error = f"worker {self.worker!r}: checkpoint {msg.checkpoint} of {msg.stage_id}: {exc}"
            return PartitionData(**{**answer.__dict__, "error": error})
        return PartitionData(**{**answer.__dict__, "data": part})
