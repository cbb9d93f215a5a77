"""The topology actor's part in a grow or shrink: the steps of
:mod:`actorflow.runtime.autoscale`, turned into messages and placements.

A mixin of :class:`actorflow.runtime.topology.TopologyActor` (its membership,
checkpoints, tables and placement), kept apart so that each file holds one concern.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from actorflow.messages import (
    ClusterChanged,
    ClusterFigures,
    JoinRefused,
    LeaveCluster,
    PartitionSource,
    ShrinkCluster,
    ShrinkDone,
    SourceProgress,
    Unhold,
)
from actorflow.partitioning import lane_id
from actorflow.resilience import WorkerFiles
from actorflow.runtime.autoscale import Rescale, Step, shrink_leavers
from actorflow.runtime.partitions import restore_sources
from actorflow.runtime.phases import Phase

log = logging.getLogger("actorflow.topology")

CUT_PATIENCE = 30.0  # seconds a rescale waits for its checkpoint before giving up


class Rescaling:
    """Grow and shrink handlers (see the module docstring)."""

    rescale: Rescale | None
    last_rescale: dict | None
    tables: dict[str, tuple[str, ...]]
    checkpoint_tables: dict[str, tuple[str, ...]]
    table_version: int
    request: Any
    membership: Any
    checkpoints: Any
    addresses: dict
    old: dict
    waiting: list
    source_addresses: dict[tuple[str, str], str]
    stream_offsets: dict[tuple[str, str, int], dict]
    state: Any
    epoch: int
    cluster_id: str
    send: Any
    place_all: Any
    placement: Any
    kept: dict
    left: set[str]
    rescales_done: int
    paused_total: float
    cluster_figures: Any
    start_checkpoint: Any
    save: Any

    def restore_from(self, p: Any, app_name: str) -> tuple[PartitionSource, ...]:
        """Whose snapshots hold a state actor's partitions at the checkpoint restored."""
        if p.stage.kind != "state" or not self.checkpoints.completed:
            return ()
        table = self.checkpoint_tables.get(p.stage.group)
        if table is None:
            return ()
        found = []
        for (worker, lane), parts in restore_sources(p.partitions, table, p.worker, p.stage.lanes):
            info = self.membership.members[worker]
            files = WorkerFiles(info.resilience_dir, app_name, worker)
            stage = lane_id(p.stage.group, lane)
            found.append(PartitionSource(worker, info.guard, files, parts, stage))
        return tuple(found)

    def note_stream_offsets(self, msg: SourceProgress) -> None:
        """Each source's stream offsets per checkpoint: a shrink hands a leaving
        worker's streams, at the cut, to a source that stays."""
        if not msg.offsets:
            return
        self.stream_offsets[(msg.stage_id, msg.worker, msg.checkpoint)] = dict(msg.offsets)
        keep = msg.checkpoint - 8
        for key in [k for k in self.stream_offsets if k[2] < keep]:
            del self.stream_offsets[key]

    def heir(self, stage_id: str) -> str | None:
        """The worker that takes the streams of a source stage's leaving replicas."""
        r = self.rescale
        if r is None or not r.leaving:
            return None
        for name in r.new_order:
            if (stage_id, name) in self.source_addresses:
                return name
        return None

    def moved_to(self, key: tuple[str, str]) -> str | None:
        """Where a retiring source on a leaving worker sends its senders, or None."""
        r = self.rescale
        stage_id, worker = key
        if r is None or r.step != Step.MOVE or worker not in r.leaving:
            return None
        heir = self.heir(stage_id)
        return self.source_addresses.get((stage_id, heir)) if heir else None

    def adopted_streams(self, p: Any) -> dict[str, int]:
        """A source's share of the leaving workers' streams: their offsets at the cut."""
        r = self.rescale
        if p.stage.kind != "source" or r is None or r.step == Step.CUT:
            return {}
        if self.heir(p.id) != p.worker:
            return {}
        adopted: dict[str, int] = {}
        for leaver in r.leaving:
            adopted.update(self.stream_offsets.get((p.id, leaver, r.cut), {}))
        return adopted

    def restore_point(self, p: Any) -> int:
        """The checkpoint an actor restores: the last completed one, except for the
        sources of a worker that joins (it had none then: its streams start anew)."""
        r = self.rescale
        if p.stage.kind == "source" and r is not None and p.worker in r.joining:
            return 0
        return self.checkpoints.completed

    def restore_needs(self) -> tuple[str, ...]:
        """Workers outside the placement whose snapshots a restore reads (leaving ones)."""
        r = self.rescale
        if r is None or r.step == Step.CUT:
            return ()
        return r.leaving

    def begin_rescale(self, kind: str, new_order: list[str], waiter: Any = None) -> None:
        """Take a checkpoint; once it completes, move to the new worker list."""
        now = time.monotonic()
        self.rescale = Rescale(
            kind, list(self.membership.order), new_order, self.checkpoints.completed, now, waiter
        )
        log.info(
            "topology: %s from %s to %s: checkpointing first",
            kind,
            ", ".join(self.membership.order),
            ", ".join(new_order),
        )
        self.membership.leaving = list(self.rescale.leaving)
        self.left -= set(new_order)  # a name that left may join again, anew
        self.advance_rescale()

    def advance_rescale(self) -> None:
        """The next step, once what it waits for is there: the joining workers' admins
        and no other checkpoint under way (then the holding cut starts), the cut (then the
        move), a checkpoint of the new layout (then the rescale is done)."""
        r = self.rescale
        if r is None or self.state != Phase.RUNNING:
            return
        done = self.checkpoints.completed
        if r.step == Step.CUT and not r.hold_at:
            if self.membership.all_registered(r.new_order) and self.checkpoints.pending is None:
                r.hold_at = self.start_checkpoint(hold=True)
        elif r.step == Step.CUT and done >= r.hold_at:
            self.move(r)
        elif r.step == Step.SETTLE and done > r.cut:
            self.finish_rescale(r)

    def move(self, r: Rescale) -> None:
        """Placement N+1 on the new worker list, restored from the cut."""
        assert self.request is not None
        r.step, r.cut, r.moving_at = Step.MOVE, self.checkpoints.completed, time.monotonic()
        self.tables = r.plan_tables(self.tables)
        self.table_version += 1
        self.membership.order = list(r.new_order)
        self.request = dataclasses.replace(self.request, worker_count=len(r.new_order))
        log.info(
            "topology: %s at checkpoint %d: owner table version %d moves %d partitions",
            r.kind,
            r.cut,
            self.table_version,
            r.partitions_moved,
        )
        # The staying workers' sources are kept, with their connections: they hold since
        # the cut's barrier, so nothing after it went into the old placement.
        sources = {(p.id, p.worker) for p in self.placement.placed if p.stage.kind == "source"}
        staying = set(r.old_order) & set(r.new_order)
        self.kept = {k: a for k, a in self.addresses.items() if k in sources and k[1] in staying}
        self.old.update({k: a for k, a in self.addresses.items() if k not in self.kept})
        self.addresses = {}
        self.place_all()

    def finish_rescale(self, r: Rescale) -> None:
        """The new layout has a checkpoint: files describe it; leaving workers go."""
        now = time.monotonic()
        workers = tuple((n, self.membership.members[n].control) for n in r.new_order)
        for name in r.new_order:
            guard = self.membership.members[name].guard
            if guard is not None:
                self.send(guard, ClusterChanged(self.cluster_id, workers, self.epoch))
        for name in r.leaving:
            self.left.add(name)
            info = self.membership.members.pop(name, None)
            self.membership.answered.pop(name, None)
            if info is not None and info.guard is not None:
                self.send(info.guard, LeaveCluster(f"actorflow shrink, at checkpoint {r.cut}"))
        self.membership.leaving = []
        for key in [k for k in self.source_addresses if k[1] in r.leaving]:
            del self.source_addresses[key]
        self.last_rescale = r.report("done", now)
        self.rescale = None
        self.rescales_done += 1
        self.paused_total += self.last_rescale["pause_seconds"]
        reporter = self.addresses.get(("reporter", self.membership.initializer))
        if reporter is not None:
            self.send(reporter, ClusterFigures(self.cluster_figures()))
        self.save()
        log.info(
            "topology: %s done: %d workers (%s); processing paused %.2f s",
            r.kind,
            len(r.new_order),
            ", ".join(r.new_order),
            self.last_rescale["pause_seconds"],
        )
        if r.waiter is not None:
            self.send(r.waiter, ShrinkDone(r.leaving, tuple(r.new_order)))

    def abandon_rescale(self, why: str) -> None:
        """Go back to the old layout: a joining worker was lost before the new layout had
        a checkpoint (the old layout is placed again from the cut), or the cut never
        came (nothing moved)."""
        r = self.rescale
        assert r is not None and self.request is not None
        log.error("topology: %s abandoned: %s; back to %s", r.kind, why, ", ".join(r.old_order))
        self.membership.order = list(r.old_order)
        if r.old_tables:
            self.tables = dict(r.old_tables)
            self.table_version += 1
        self.request = dataclasses.replace(self.request, worker_count=len(r.old_order))
        for name in r.joining:
            self.membership.members.pop(name, None)
            self.membership.lost.discard(name)
            self.membership.dead.discard(name)
            self.membership.answered.pop(name, None)
        for join, reply_to in self.waiting:
            if join.worker.name in r.joining:
                self.send(reply_to, JoinRefused(f"the grow was abandoned: {why}"))
        self.waiting = [(j, to) for j, to in self.waiting if j.worker.name not in r.joining]
        # The joiner's actors died with it: nobody waits for them to retire.
        self.old = {k: a for k, a in self.old.items() if k[1] not in r.joining}
        self.addresses = {k: a for k, a in self.addresses.items() if k[1] not in r.joining}
        self.membership.leaving = []
        self.last_rescale = r.report(f"abandoned: {why}", time.monotonic())
        self.rescale = None
        if r.step == Step.CUT and r.hold_at:  # the sources hold at the cut: let them go
            for p in self.placement.placed:
                if p.stage.kind == "source" and (p.id, p.worker) in self.addresses:
                    self.send(self.addresses[(p.id, p.worker)], Unhold(self.epoch))
        if r.waiter is not None:
            self.send(r.waiter, ShrinkDone((), tuple(r.old_order), f"abandoned: {why}"))

    def check_rescale(self, now: float) -> None:
        """Give up a rescale whose cut never comes (no checkpoint completes, or a joining
        worker never reaches the convention): nothing has moved yet."""
        r = self.rescale
        if r is not None and r.step == Step.CUT and now - r.asked_at > CUT_PATIENCE:
            missing = [w for w in r.joining if not self.membership.all_registered([w])]
            why = (
                f"worker(s) {', '.join(missing)} did not register with the initializer's admin"
                if missing
                else f"no checkpoint completed within {CUT_PATIENCE:g} s (a receiver away?)"
            )
            self.abandon_rescale(why)

    def on_shrink(self, msg: ShrinkCluster, sender: Any) -> None:
        order = tuple(self.membership.order)
        if self.request is None:
            self.send(sender, ShrinkDone((), (), "not the initializer's control address"))
            return
        error = None
        if self.state != Phase.RUNNING:
            error = f"the cluster is {self.state}, not running"
        elif self.rescale is not None:
            error = "a grow or shrink is under way already"
        elif self.request.settings.checkpoint_every <= 0:
            error = "this cluster runs without checkpoints: a shrink moves state at a checkpoint"
        leaving: tuple[str, ...] = ()
        if error is None:
            leaving, error = shrink_leavers(
                order, self.membership.initializer, msg.workers, msg.count
            )
        if error is not None:
            self.send(sender, ShrinkDone((), order, error))
            return
        self.begin_rescale("shrink", [w for w in order if w not in leaving], sender)
