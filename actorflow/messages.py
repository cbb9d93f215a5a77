"""Every message that actors exchange, declared in one place and grouped by protocol.

Messages are small frozen dataclasses; Thespian pickles them between
processes. Record payloads are lists of ``(key, value)`` pairs (pickle beat
msgpack for batches of Python objects: see benchmarks/batch_codec.py), or, on
the last hop to a sink, the bytes the encoder produced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------
# Data protocol: batches flow downstream, acknowledgements flow back.
# A link allows a bounded number of unacknowledged batches (its window);
# a receiver acknowledges a batch once it has handled it and has room for more.


@dataclass(frozen=True, slots=True, repr=False)
class Batch:
    """Records for the next stage: ``records`` is a list of (key, value)."""

    link: int
    seq: int
    records: list

    def __repr__(self) -> str:  # Thespian formats messages it sends: keep that cheap
        return f"Batch(link={self.link}, seq={self.seq}, {len(self.records)} records)"


@dataclass(frozen=True, slots=True, repr=False)
class EncodedBatch:
    """Encoded output for a sink: ``count`` records, already encoded, joined."""

    link: int
    seq: int
    data: bytes
    count: int

    def __repr__(self) -> str:
        return f"EncodedBatch(link={self.link}, seq={self.seq}, {self.count} records)"


@dataclass(frozen=True, slots=True)
class Ack:
    """The receiver of batch ``seq`` on ``link`` has handled it."""

    link: int
    seq: int


# --------------------------------------------------------------------------
# Placement protocol: topology actor -> placed actors.


@dataclass(frozen=True)
class Route:
    """One outgoing edge of a placed actor.

    ``kind`` is ``records`` (a list of (key, value) to one actor), ``partitioned``
    (``targets[p]`` is the actor owning partition p) or ``encoded`` (bytes for a
    sink; ``sink`` names the sink config whose encoder to use: (stage id, index)).
    """

    kind: str
    targets: tuple[Any, ...]
    sink: tuple[int, int] | None = None


@dataclass(frozen=True)
class Configure:
    """Tells a placed actor which stage of the plan it runs and where its output goes."""

    app_path: str
    app_args: tuple[str, ...]
    worker: str
    stage: Any  # plan.PlacedStage
    routes: tuple[Route, ...]
    settings: Any  # runtime settings (plan.Settings)


@dataclass(frozen=True)
class Configured:
    """Reply to Configure: ``error`` is None when the actor is ready."""

    stage_id: str
    worker: str
    error: str | None = None


@dataclass(frozen=True)
class StartSource:
    """Tells a source actor to start listening (or generating)."""


@dataclass(frozen=True)
class SourceStarted:
    """Reply to StartSource: where the source listens, or why it could not."""

    stage_id: str
    worker: str
    address: str | None
    error: str | None = None


# --------------------------------------------------------------------------
# Cluster protocol: worker command -> topology actor, and queries.


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker tells the cluster about itself.

    ``uid`` names this incarnation of the worker: actors are placed by it, so a
    refused worker with a duplicate name can never receive any.
    """

    name: str
    uid: str
    app_args: tuple[str, ...]
    control: str
    has_sources: bool = True


@dataclass(frozen=True)
class BuildCluster:
    """From the initializer's worker command: wait for the workers, then place the app."""

    app_path: str
    initializer: WorkerInfo
    worker_count: int
    settings: Any  # plan.Settings


@dataclass(frozen=True)
class JoinCluster:
    """From a joining worker's command: this worker is ready to take its actor group."""

    worker: WorkerInfo
    worker_count: int


@dataclass(frozen=True)
class JoinRefused:
    """The cluster does not take this worker; ``reason`` says why."""

    reason: str


@dataclass(frozen=True)
class ClusterReady:
    """Every actor is placed and configured and every source is listening."""

    summary: dict


@dataclass(frozen=True)
class ClusterFailed:
    """The cluster could not be built; ``reason`` names the cause."""

    reason: str


@dataclass(frozen=True)
class StatusQuery:
    """Ask an actor (or the topology actor, for the whole cluster) for its figures."""

    detail: bool = True


@dataclass(frozen=True)
class StageStatus:
    """One placed actor's figures."""

    stage_id: str
    worker: str
    kind: str
    counters: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterStatus:
    """The topology actor's answer to StatusQuery."""

    status: dict


# --------------------------------------------------------------------------
# Worker guard protocol.


@dataclass(frozen=True)
class GuardWorker:
    """Watch the worker command with this pid; end the worker's processes if it dies."""

    pid: int


@dataclass(frozen=True)
class GuardReady:
    """The guard's process group: every actor process of this worker is in it."""

    pgid: int
