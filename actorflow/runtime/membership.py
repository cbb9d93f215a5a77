"""Who belongs to the cluster, which incarnation of each worker, and who is alive.

Plain bookkeeping for the topology actor, with no actor and no I/O: the actor turns
messages and timers into calls here and sends what the answers say, so the rules
(who may join, when a worker is lost, when a lost one is back) are tested without
processes (tests/test_liveness.py).

A worker is *lost* when its guard has not answered heartbeats for ``LOST_AFTER``
seconds: crashed, stopped (SIGSTOP) or cut off, it is fenced the same way. A lost
worker that answers again never died; its actors of the old epoch are alive and are
retired with the others'. A worker whose actors died with it (a crash, a restart) is
*dead* for the next placement: nobody retires its old actors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from actorflow.messages import JoinCluster, WorkerInfo

HEARTBEAT_EVERY = 0.5  # seconds between heartbeats
LOST_AFTER = 3.0  # seconds without a heartbeat answer before a worker is lost (fenced)
LOST_HEARTBEAT_EVERY = 2.0  # seconds between heartbeats to a lost worker
DUPLICATE_WITHIN = 1.0  # a known incarnation that answered this recently is running

SETTINGS_FLAGS = (
    "batch_size",
    "window",
    "partitions",
    "state_actors",
    "max_frame_size",
    "sink_buffer",
)


class Membership:
    """The workers of one cluster (see the module docstring)."""

    def __init__(self) -> None:
        self.initializer = ""  # its worker is the topology actor's own: never lost
        self.members: dict[str, WorkerInfo] = {}  # current incarnation of each worker
        self.order: list[str] = []  # worker names in placement order (fixed once placed)
        self.leaving: list[str] = []  # out of the order in a shrink, but watched until gone
        self.registered: dict[str, str] = {}  # uid -> worker name, from the convention
        self.lost: set[str] = set()
        self.dead: set[str] = set()  # their old actors died with them
        self.answered: dict[str, float] = {}  # worker -> when its guard last answered
        self.asked: dict[str, float] = {}  # worker -> when it was last sent a heartbeat

    # ---- joining ------------------------------------------------------------------

    def refusal(
        self, join: JoinCluster, request: Any, cluster_id: str, placed_before: bool, now: float
    ) -> tuple[str, bool] | None:
        """Why this worker cannot join (and whether its files are stale), or None.

        ``request`` is the initializer's BuildCluster; ``placed_before``: the cluster
        has been ready at least once (its workers then have files)."""
        info = join.worker
        member = info.cluster_id == cluster_id and info.name in self.order
        if join.worker_count != request.worker_count and not member:
            # (a member restarting from its files may predate a grow or shrink)
            return (
                f"worker-count mismatch: this worker says --worker-count {join.worker_count}, "
                f"the initializer {request.initializer.name!r} says {request.worker_count}",
                False,
            )
        differ = settings_differences(join.settings, request.settings)
        if differ:
            return (f"settings differ from the initializer's: {', '.join(differ)}", False)
        if info.cluster_id is not None and info.cluster_id != cluster_id:
            return (f"its resilience files belong to another cluster ({info.cluster_id})", True)
        known = info.name in self.order
        if known and self.alive(info.name, now):
            return (
                f"worker {info.name!r} is running already (it answers heartbeats at "
                f"{self.members[info.name].control}); stop it before starting it again",
                False,
            )
        if info.cluster_id is not None:
            if not known:
                return (f"worker {info.name!r} is not a member of cluster {cluster_id}", True)
            return None  # a member restarting from its files
        if known and not placed_before:
            return None  # it died during the first placement, before it had files
        if self.order:  # placed before (or resuming): only members with their files
            if known:
                return (
                    f"worker {info.name!r} belongs to cluster {cluster_id} and must "
                    "restart from its resilience files, but has none in its --resilience-dir",
                    False,
                )
            return (f"the cluster is already running with its {len(self.order)} workers", False)
        if info.name in self.members:
            return (f"worker name {info.name!r} is already taken in this cluster", False)
        if len(self.members) >= request.worker_count:
            return (
                f"the cluster already has its {request.worker_count} workers (--worker-count)",
                False,
            )
        return None

    def alive(self, name: str, now: float) -> bool:
        """True if the incarnation of ``name`` we know is still there."""
        current = self.members.get(name)
        if current is None or name in self.lost or name in self.dead:
            return False
        if name == self.initializer:
            return True
        recently = now - self.answered.get(name, float("-inf")) < DUPLICATE_WITHIN
        return current.uid in self.registered and recently

    def admit(self, info: WorkerInfo, now: float) -> bool:
        """Take ``info`` as the current incarnation of its worker; True if the worker was
        placed before (a restart: its old actors died with it)."""
        rejoin = info.name in self.order
        self.members[info.name] = info
        self.answered[info.name] = now  # a new incarnation: heard from now
        if rejoin:
            self.dead.add(info.name)
            self.lost.discard(info.name)
        return rejoin

    def waiting_for(self, names: list[str]) -> list[str]:
        """The workers among ``names`` that are not (or no longer) with us."""
        return [n for n in names if n not in self.members or n in self.lost]

    def all_registered(self, names: list[str]) -> bool:
        """True once every worker's admin has joined the convention."""
        return all(self.members[n].uid in self.registered for n in names)

    # ---- liveness -----------------------------------------------------------------

    def heartbeat_targets(self, now: float) -> Iterator[tuple[str, Any]]:
        """(worker, guard) to heartbeat now; a lost worker only every few seconds, since
        transmits to it queue up."""
        for name in self.watched():
            info = self.members.get(name)
            if name == self.initializer or info is None or info.guard is None:
                continue
            if name in self.lost and now - self.asked.get(name, 0.0) < LOST_HEARTBEAT_EVERY:
                continue
            self.asked[name] = now
            yield name, info.guard

    def newly_lost(self, now: float, within: float = LOST_AFTER) -> list[tuple[str, float]]:
        """Mark lost (and dead) the workers silent for ``within`` seconds; (name, silent)."""
        found = []
        for name in self.watched():
            if name == self.initializer or name in self.lost or name not in self.members:
                continue
            silent = now - self.answered.get(name, now)
            if silent >= within:
                self.lost.add(name)
                self.dead.add(name)
                found.append((name, silent))
        return found

    def watched(self) -> list[str]:
        """The workers heartbeats watch: the placement's, and those leaving it."""
        return self.order + [n for n in self.leaving if n not in self.order]

    def answer(self, worker: str, uid: str, now: float) -> bool:
        """A guard answered; True if it is a lost worker coming back (it never died: its
        old actors are alive and must be retired)."""
        info = self.members.get(worker)
        if info is None or info.uid != uid:
            return False  # an incarnation that was replaced
        self.answered[worker] = now
        if worker not in self.lost:
            return False
        self.lost.discard(worker)
        self.dead.discard(worker)
        return True

    def silent_for(self, worker: str, now: float) -> float:
        return now - self.answered.get(worker, 0.0)

    def fenced(self) -> tuple[str, ...]:
        """The workers no stage should wait for."""
        return tuple(sorted(self.lost | self.dead))


def settings_differences(theirs: Any, ours: Any) -> list[str]:
    """The engine settings of a joining worker that differ from the cluster's."""
    if theirs is None or theirs == ours:
        return []
    differ = [
        f"--{f.replace('_', '-')} {getattr(theirs, f)} (the cluster's: {getattr(ours, f)})"
        for f in SETTINGS_FLAGS
        if getattr(theirs, f) != getattr(ours, f)
    ]
    if theirs.checkpoint_every != ours.checkpoint_every:
        differ.append(
            f"--time-between-checkpoints {theirs.checkpoint_every:g} (the cluster's: "
            f"{ours.checkpoint_every:g})"
        )
    return differ
