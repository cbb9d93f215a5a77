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
    """Records for the next stage: ``records`` is a list of (key, value).

    ``epoch`` fences actors of an older placement: a batch from another epoch is dropped.
    ``born`` is when the oldest record of the batch entered the cluster (for latency).
    ``watermark`` (apps with windows): the sender's watermark, in nanoseconds of event
    time, holding after these records (-1: the sender is idle; None: not known yet).
    A batch without records carries only a watermark. In such an app records are
    (key, value, event time).
    """

    link: int
    seq: int
    records: list
    epoch: int = 0
    born: float = 0.0
    watermark: int | None = None

    def __repr__(self) -> str:  # Thespian formats messages it sends: keep that cheap
        return f"Batch(link={self.link}, seq={self.seq}, {len(self.records)} records)"


@dataclass(frozen=True, slots=True, repr=False)
class EncodedBatch:
    """Encoded output for a sink: ``count`` records, already encoded, joined."""

    link: int
    seq: int
    data: bytes
    count: int
    epoch: int = 0
    born: float = 0.0

    def __repr__(self) -> str:
        return f"EncodedBatch(link={self.link}, seq={self.seq}, {self.count} records)"


@dataclass(frozen=True, slots=True)
class Barrier:
    """Checkpoint ``checkpoint`` passes this link: everything before it belongs to it.

    Barriers travel in sequence with the batches of a link, as Chandy-Lamport markers.
    """

    link: int
    seq: int
    checkpoint: int
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Ack:
    """The receiver of batch ``seq`` on ``link`` has handled it, and every one before
    it (``epoch``: the batch's; a link of an older placement is another link)."""

    link: int
    seq: int
    epoch: int = 0


# --------------------------------------------------------------------------
# Placement protocol: topology actor -> placed actors.


@dataclass(frozen=True)
class Route:
    """One outgoing edge of a placed actor.

    ``kind`` is ``records`` (a list of (key, value) to one actor), ``partitioned``
    (``targets[p]`` is the actor owning partition p), ``encoded`` (bytes for a sink;
    ``sink`` names the sink config whose encoder to use: (stage id, index)) or
    ``lanes`` (each source connection's records to one of ``targets``, the lanes of the
    next stage).
    """

    kind: str
    targets: tuple[Any, ...]
    sink: tuple[int, int] | None = None
    workers: tuple[str, ...] = ()  # partitioned: the worker of each target


@dataclass(frozen=True)
class Configure:
    """Tells a placed actor which stage of the plan it runs and where its output goes.

    ``inputs`` is how many upstream actors send to it (a barrier is aligned once it
    came from all of them); ``restore`` is the checkpoint to load state or source
    offsets from (0: none); ``files`` names this worker's resilience files.
    """

    app_path: str
    app_args: tuple[str, ...]
    worker: str
    stage: Any  # plan.PlacedStage
    routes: tuple[Route, ...]
    settings: Any  # runtime settings (plan.Settings)
    epoch: int = 0
    inputs: int = 0
    restore: int = 0
    files: Any = None  # resilience.WorkerFiles
    coordinator: Any = None  # the topology actor's address
    metrics: Any = None  # the worker's metrics reporter actor, or None
    restore_from: tuple = ()  # state: PartitionSource of each old owner of its partitions
    adopt_offsets: dict = field(default_factory=dict)  # source: streams of leaving workers
    keep: bool = False  # a source of a staying worker in a rescale: keep sockets and offsets


@dataclass(frozen=True)
class PartitionSource:
    """Where a state actor finds some of its partitions at the checkpoint it restores:
    in the snapshot of ``worker`` (``files``), read by that worker's ``guard``."""

    worker: str
    guard: Any
    files: Any  # resilience.WorkerFiles of that worker
    partitions: tuple[int, ...]
    stage_id: str = ""  # the state actor (lane) whose snapshot it is ("": the asker's)


@dataclass(frozen=True)
class FetchPartitions:
    """To a worker's guard: send these partitions of a stage's snapshot at a checkpoint."""

    stage_id: str
    checkpoint: int
    files: Any  # resilience.WorkerFiles of the guard's worker
    partitions: tuple[int, ...]
    count: int  # the stage's partition count (to split a format-1 snapshot)
    keyed_in: str | None  # where a format-1 snapshot keeps its keys (window steps: "keys")
    epoch: int = 0


@dataclass(frozen=True)
class PartitionData:
    """A guard's answer to FetchPartitions: the snapshot part, or why there is none."""

    stage_id: str
    checkpoint: int
    worker: str
    epoch: int
    data: dict | None = None
    error: str | None = None


@dataclass(frozen=True)
class Configured:
    """Reply to Configure: ``error`` is None when the actor is ready."""

    stage_id: str
    worker: str
    error: str | None = None
    epoch: int = 0


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
    epoch: int = 0


# --------------------------------------------------------------------------
# Checkpoint protocol: the topology actor coordinates, sources start, sinks finish.


@dataclass(frozen=True)
class StartCheckpoint:
    """To every source: record your offsets and send barrier ``checkpoint`` downstream.
    ``hold``: then take nothing more (the cut of a grow or shrink) until StartSource or
    Unhold."""

    checkpoint: int
    epoch: int
    hold: bool = False


@dataclass(frozen=True)
class Unhold:
    """To sources holding at a cut whose grow or shrink was given up: go on."""

    epoch: int


@dataclass(frozen=True)
class CheckpointReached:
    """From a sink (or a source with no outlets): barrier ``checkpoint`` came from all
    inputs, so everything upstream has snapshotted it."""

    checkpoint: int
    epoch: int
    stage_id: str
    worker: str


@dataclass(frozen=True)
class CheckpointFailed:
    """A step could not write its part of ``checkpoint``: it never completes."""

    checkpoint: int
    epoch: int
    stage_id: str
    worker: str
    reason: str


@dataclass(frozen=True)
class OwnerUnreachable:
    """From a router: it gave up on ``worker`` and drops records for its keys; the
    cluster must roll back (replaying them) once that worker is back or found alive."""

    worker: str
    stage_id: str
    reporter: str


@dataclass(frozen=True)
class SourceProgress:
    """From a source at each barrier: records taken so far from senders that cannot
    replay, in total and at this checkpoint (to report possible loss on rollback)."""

    stage_id: str
    worker: str
    checkpoint: int
    unreplayable: int
    offsets: dict = field(default_factory=dict)  # acknowledged streams' offsets at it


@dataclass(frozen=True)
class CheckpointDone:
    """To sources and state actors: checkpoint ``checkpoint`` is complete cluster-wide."""

    checkpoint: int
    epoch: int


@dataclass(frozen=True)
class Retire:
    """To an actor of an older placement: close your sockets, answer, and exit.
    ``moved_to``: a leaving worker's source tells its acknowledged senders to go there."""

    epoch: int
    moved_to: str | None = None


@dataclass(frozen=True)
class Retired:
    """An actor closed its sockets; ``unreplayable`` counts records from plain senders,
    ``dropped`` the records it dropped for workers that were lost."""

    stage_id: str
    worker: str
    unreplayable: int = 0
    dropped: int = 0


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
    cluster_id: str | None = None  # set when the worker restarts from its files
    resilience_dir: str = "/tmp"
    guard: Any = None  # the worker's guard actor: it stops the worker command
    metrics: str | None = None  # the worker's --metrics address


@dataclass(frozen=True)
class BuildCluster:
    """From the initializer's worker command: wait for the workers, then place the app.

    ``resume`` (a resilience.ClusterState) is set when the initializer restarts from
    its files: the cluster re-forms with the same workers and rolls back to the last
    completed checkpoint.
    """

    app_path: str
    initializer: WorkerInfo
    worker_count: int
    settings: Any  # plan.Settings
    files: Any  # resilience.WorkerFiles of the initializer
    resume: Any = None


@dataclass(frozen=True)
class JoinCluster:
    """From a joining worker's command: this worker is ready to take its actor group."""

    worker: WorkerInfo
    worker_count: int
    settings: Any = None  # plan.Settings of the joining worker: must match the cluster's
    grow: bool = False  # --join: a new worker for a running cluster (the cluster grows)


@dataclass(frozen=True)
class JoinRefused:
    """The cluster does not take this worker; ``reason`` says why; ``stale``: because
    of resilience files from another cluster."""

    reason: str
    stale: bool = False
    left: bool = False  # this worker left the cluster in a shrink: it removes its files


@dataclass(frozen=True)
class ClusterReady:
    """Every actor is placed and configured and every source is listening."""

    summary: dict
    cluster_id: str = ""
    workers: tuple = ()  # (name, control) of every worker


@dataclass(frozen=True)
class ShutdownCluster:
    """From ``actorflow shutdown``: take a last checkpoint, then stop every worker."""


@dataclass(frozen=True)
class ShutdownDone:
    """Reply to ShutdownCluster: the last checkpoint, and the workers told to stop."""

    checkpoint: int
    workers: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class StopWorker:
    """To a worker's guard: stop the worker command (as SIGTERM would)."""


@dataclass(frozen=True)
class ShrinkCluster:
    """From ``actorflow shrink``: these workers (or this many) hand over their partitions
    and leave."""

    workers: tuple[str, ...] = ()
    count: int = 0


@dataclass(frozen=True)
class ShrinkDone:
    """Reply to ShrinkCluster: who left, who stays; ``error`` if nothing was done."""

    left: tuple[str, ...]
    workers: tuple[str, ...]
    error: str | None = None


@dataclass(frozen=True)
class ClusterChanged:
    """To every guard after a grow or shrink: the worker list its cluster file records."""

    cluster_id: str
    workers: tuple  # (name, control) of every worker
    epoch: int = 0


@dataclass(frozen=True)
class LeaveCluster:
    """To a leaving worker's guard: remove the worker's resilience files and stop it."""

    reason: str


@dataclass(frozen=True)
class ClusterFailed:
    """The cluster could not be built; ``reason`` names the cause."""

    reason: str


@dataclass(frozen=True)
class StatusQuery:
    """Ask an actor (or the topology actor, for the whole cluster) for its figures."""


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
    worker: str = ""
    uid: str = ""
    files: Any = None  # resilience.WorkerFiles: snapshots it serves, the file it updates


@dataclass(frozen=True)
class GuardReady:
    """The guard's process group: every actor process of this worker is in it."""

    pgid: int


# --------------------------------------------------------------------------
# Liveness protocol: the topology actor heartbeats every worker's guard (its own
# actors answer, not just its kernel), and tells every stage which workers are lost.


@dataclass(frozen=True)
class Heartbeat:
    """To a worker's guard: answer with HeartbeatAck."""

    seq: int


@dataclass(frozen=True)
class HeartbeatAck:
    """From a guard: this incarnation (``uid``) of ``worker`` is alive and responsive."""

    seq: int
    worker: str
    uid: str


@dataclass(frozen=True)
class Fenced:
    """To the guard of a worker that was declared lost and answers again: its actors
    belong to an old epoch and are being replaced."""

    epoch: int
    reason: str


@dataclass(frozen=True)
class Liveness:
    """To every stage, about once a second: the workers the cluster holds lost. A stage
    that stops hearing this is cut off from the topology actor."""

    lost: tuple[str, ...]
    epoch: int


# --------------------------------------------------------------------------
# Metrics protocol: placed actors -> their worker's reporter -> the metrics hub.


@dataclass(frozen=True)
class StartReporting:
    """To a worker's reporter: send a report to ``address`` (host, port) every interval."""

    app: str
    worker: str
    address: tuple[str, int]
    interval: float
    cluster: dict | None = None  # the initializer's: the cluster's rescale figures


@dataclass(frozen=True)
class ClusterFigures:
    """To the initializer's reporter: the cluster's figures changed (a rescale ended)."""

    figures: dict


@dataclass(frozen=True)
class StageReport:
    """One actor's figures for the last interval (see actorflow.metrics.report)."""

    stage_id: str
    step: dict
    pipeline_latency: dict | None = None  # sinks: source-to-sink latency, wire form
