"""The topology actor's gathering of workers: the initializer's BuildCluster, joins
(refused with the reason, or admitted as a new worker, a restarted member or, with
--join, a grow), and the convention's news of admins coming and going.

A mixin of :class:`actorflow.runtime.topology.TopologyActor`; the rules of who may
join are plain functions of :mod:`actorflow.runtime.membership` and
:mod:`actorflow.runtime.autoscale`.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from thespian.actors import ActorSystemConventionUpdate

from actorflow.messages import BuildCluster, ClusterFailed, JoinCluster, JoinRefused
from actorflow.resilience import ClusterState, stale_hint
from actorflow.runtime.autoscale import Step, grow_refusal
from actorflow.runtime.membership import settings_differences
from actorflow.runtime.phases import PLACED, Phase
from actorflow.runtime.stage import WORKER_CAPABILITY, WORKER_UID_CAPABILITY

log = logging.getLogger("actorflow.topology")


class Gathering:
    """Gathering handlers (see the module docstring)."""

    request: Any
    requester: Any
    waiting: list
    cluster_id: str
    membership: Any
    checkpoints: Any
    state: Any
    epoch: int
    old: dict
    tables: dict
    checkpoint_tables: dict
    table_version: int
    rescale: Any
    left: set[str]
    ever_ready: bool
    started_at: float
    send: Any
    fail: Any
    place_all: Any
    begin_recovery: Any
    begin_rescale: Any
    advance_rescale: Any
    restore_needs: Any

    def on_build(self, msg: BuildCluster, sender: Any) -> None:
        if self.request is not None:
            self.send(sender, ClusterFailed("this cluster already has an initializer"))
            return
        self.request = msg
        self.requester = sender
        self.membership.initializer = msg.initializer.name
        self.membership.registered[msg.initializer.uid] = msg.initializer.name  # our own admin
        self.started_at = time.monotonic()
        self.state = Phase.GATHERING
        resume: ClusterState | None = msg.resume
        if resume is not None:
            self.cluster_id = resume.cluster_id
            self.epoch = resume.epoch
            self.checkpoints.resume_from(resume.checkpoint)
            self.membership.order = list(resume.workers)
            self.tables = dict(resume.tables)
            self.checkpoint_tables = dict(resume.checkpoint_tables)
            self.table_version = resume.table_version
            self.old = dict(resume.addresses.get("actors", {}))
            self.membership.dead.add(msg.initializer.name)  # our old actors died with us
            for name, info in resume.addresses.get("members", {}).items():
                if name != msg.initializer.name:
                    self.membership.members[name] = info  # present once its admin registers again
            log.info(
                "topology: resuming cluster %s from checkpoint %d (epoch %d); waiting for %s",
                self.cluster_id,
                self.checkpoints.completed,
                self.epoch,
                ", ".join(self.membership.order),
            )
        else:
            self.cluster_id = uuid.uuid4().hex
        self.membership.members[msg.initializer.name] = msg.initializer
        early, self.waiting = list(self.waiting), []
        for join, reply_to in early:
            self.on_join(join, reply_to)
        self.maybe_place()

    def refusal(self, join: JoinCluster) -> tuple[str, bool] | None:
        """Why this worker cannot join (and whether its files are stale), or None."""
        if self.request is None:
            return None
        info = join.worker
        if join.grow and info.name not in self.membership.order:
            why = grow_refusal(
                info.name,
                join.worker_count,
                self.membership.order,
                self.state == Phase.RUNNING,
                self.rescale is not None,
                self.request.settings.checkpoint_every > 0,
            )
            differ = settings_differences(join.settings, self.request.settings)
            if why is None and differ:
                why = f"settings differ from the cluster's: {', '.join(differ)}"
            if why is None and info.cluster_id is not None:
                return (f"its resilience files belong to another cluster ({info.cluster_id})", True)
            return (why, False) if why else None
        if join.grow and info.cluster_id is None:
            return (
                f"worker name {info.name!r} is already taken in this cluster: give the new "
                "worker another --worker-name (a member restarts from its resilience files)",
                False,
            )
        r = self.rescale
        if r is not None and info.name in r.leaving and info.cluster_id == self.cluster_id:
            return None  # a leaving worker restarts: its snapshots are still needed
        return self.membership.refusal(
            join, self.request, self.cluster_id, self.ever_ready, time.monotonic()
        )

    def on_join(self, msg: JoinCluster, sender: Any) -> None:
        if self.request is None:
            self.waiting.append((msg, sender))  # checked when the initializer asks
            return
        info = msg.worker
        if info.name in self.left and info.cluster_id == self.cluster_id:
            reason = f"worker {info.name!r} left cluster {self.cluster_id} (actorflow shrink)"
            log.info("topology: %s; it removes its files", reason)
            self.send(sender, JoinRefused(reason, left=True))
            return
        if info.name in self.left and info.cluster_id is None and not msg.grow:
            reason = (
                f"worker {info.name!r} left this cluster (actorflow shrink); to add it "
                "again, start it with --join"
            )
            self.send(sender, JoinRefused(reason))
            return
        why = self.refusal(msg)
        if why:
            log.warning("topology: refusing worker %r: %s", info.name, why[0])
            self.send(sender, JoinRefused(why[0], why[1]))
            req = self.request
            if self.state == "gathering" and req.resume is not None and info.cluster_id is None:
                # A worker without files joins a cluster that restarts from files: the
                # user means a new cluster, and the initializer's files are stale.
                self.fail(
                    f"worker {info.name!r} has no resilience files, but this initializer "
                    f"restarts cluster {self.cluster_id} from its own: "
                    + stale_hint(req.files.folder, req.files.existing())
                )
            return
        rejoin = self.membership.admit(info, time.monotonic())
        self.waiting.append((msg, sender))
        log.info("topology: worker %r %s", info.name, "rejoined" if rejoin else "joined")
        if msg.grow and not rejoin:
            self.begin_rescale("grow", [*self.membership.order, info.name])
            return
        if self.rescale is not None and info.name in self.rescale.leaving:
            self.membership.dead.add(info.name)  # its old actors died with it
            if self.state in PLACED and self.rescale.step != Step.CUT:
                # The move reads its snapshots through its guard: place again with the
                # new one.
                self.begin_recovery(f"leaving worker {info.name!r} restarted")
                return
        if rejoin and self.state in PLACED:
            # Its old actors died with it; whatever runs elsewhere must roll back.
            self.begin_recovery(f"worker {info.name!r} restarted")
            return
        self.maybe_place()

    def on_convention_update(self, msg: ActorSystemConventionUpdate) -> None:
        caps = msg.remoteCapabilities or {}
        uid = caps.get(WORKER_UID_CAPABILITY)
        if uid is None:
            return
        if msg.remoteAdded:
            self.membership.registered[uid] = caps.get(WORKER_CAPABILITY, "?")
            self.advance_rescale()
        else:
            self.membership.registered.pop(uid, None)
            if self.state == "gathering" and not self.membership.order:
                for name, info in list(self.membership.members.items()):
                    if info.uid == uid and self.request and name != self.request.initializer.name:
                        log.warning("topology: worker %r left before the cluster started", name)
                        del self.membership.members[name]
        self.maybe_place()

    def maybe_place(self) -> None:
        req = self.request
        if req is None or self.state not in ("gathering", "recovering"):
            return
        names = self.membership.order or [req.initializer.name] + sorted(
            n for n in self.membership.members if n != req.initializer.name
        )
        missing = self.membership.waiting_for(names + list(self.restore_needs()))
        if len(names) < req.worker_count or missing:
            waiting_for = missing or [f"{req.worker_count - len(names)} more"]
            log.info("topology: waiting for worker(s) %s", ", ".join(waiting_for))
            return
        if not self.membership.all_registered(names):
            return  # a worker's admin has not joined the convention yet
        self.membership.order = names
        self.place_all()
