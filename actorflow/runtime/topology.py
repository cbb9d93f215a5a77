"""The topology actor: compiles the app, places actor groups on workers, starts sources.

It lives on the initializer. After start-up it only answers status queries:
records never pass through it.
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import timedelta
from typing import Any

from thespian.actors import (
    ActorExitRequest,
    ActorSystemConventionUpdate,
    ChildActorExited,
    PoisonMessage,
    WakeupMessage,
)

from actorflow.api import GenSourceConfig
from actorflow.loader import load_application
from actorflow.messages import (
    BuildCluster,
    ClusterFailed,
    ClusterReady,
    ClusterStatus,
    Configure,
    Configured,
    JoinCluster,
    JoinRefused,
    SourceStarted,
    StageStatus,
    StartSource,
    StatusQuery,
    WorkerInfo,
)
from actorflow.plan import Placement, Plan, compile_plan, describe, place, wire
from actorflow.runtime.sink import SinkActor
from actorflow.runtime.source import SourceActor
from actorflow.runtime.stage import WORKER_UID_CAPABILITY, PlacedActor
from actorflow.runtime.step import ChainActor, RouterActor, StateActor

log = logging.getLogger("actorflow.topology")

ACTOR_CLASSES = {
    "source": SourceActor,
    "chain": ChainActor,
    "router": RouterActor,
    "state": StateActor,
    "sink": SinkActor,
}

STATUS_TIMEOUT = timedelta(seconds=2)


class TopologyActor(PlacedActor):
    """Gathers the workers, places the app on them, and answers status queries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requester: Any = None
        self.request: BuildCluster | None = None
        self.joiners: dict[str, tuple[JoinCluster, Any]] = {}  # name -> (request, reply address)
        self.registered: set[str] = set()  # worker uids whose admin joined the convention
        self.subscribed = False
        self.plan: Plan | None = None
        self.placement: Placement | None = None
        self.addresses: dict[tuple[str, str], Any] = {}
        self.configuring: set[tuple[str, str]] = set()
        self.starting: set[tuple[str, str]] = set()
        self.listening: dict[str, list[str]] = {}
        self.state = "idle"  # idle | gathering | configuring | starting | running | failed
        self.started_at = 0.0
        self.workers: tuple[WorkerInfo, ...] = ()
        self.status_waiters: list[Any] = []
        self.status_replies: dict[tuple[str, str], dict] = {}
        self.status_round = 0

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        if not self.subscribed:
            self.subscribed = True
            self.notifyOnSystemRegistrationChanges(True)
        try:
            if isinstance(msg, BuildCluster):
                self.on_build(msg, sender)
            elif isinstance(msg, JoinCluster):
                self.on_join(msg, sender)
            elif isinstance(msg, ActorSystemConventionUpdate):
                self.on_convention_update(msg)
            elif isinstance(msg, Configured):
                self.on_configured(msg)
            elif isinstance(msg, SourceStarted):
                self.on_source_started(msg)
            elif isinstance(msg, StatusQuery):
                self.on_status_query(sender)
            elif isinstance(msg, StageStatus):
                self.on_stage_status(msg)
            elif isinstance(msg, WakeupMessage):
                if msg.payload == ("status", self.status_round):
                    self.answer_status()
            elif isinstance(msg, PoisonMessage):
                self.fail(f"a placement message could not be delivered: {msg.poisonMessage!r}")
            elif isinstance(msg, ChildActorExited):
                if self.state in ("configuring", "starting", "running"):
                    log.info("topology: actor %s exited", msg.childAddress)
            elif isinstance(msg, ActorExitRequest):
                pass
        except Exception:
            self.fail(f"topology actor error: {traceback.format_exc()}")

    # ---- gathering the workers ----------------------------------------------

    def on_build(self, msg: BuildCluster, sender: Any) -> None:
        if self.request is not None:
            self.send(sender, ClusterFailed("this cluster already has an initializer"))
            return
        self.request = msg
        self.requester = sender
        self.registered.add(msg.initializer.uid)  # our own admin
        self.state = "gathering"
        self.started_at = time.monotonic()
        # Workers that came before the initializer's request are checked now.
        early, self.joiners = list(self.joiners.values()), {}
        for join, reply_to in early:
            self.on_join(join, reply_to)
        self.maybe_place()

    def refusal(self, join: JoinCluster) -> str | None:
        """Why this worker cannot join, or None."""
        req = self.request
        name = join.worker.name
        if self.state not in ("idle", "gathering"):
            return f"the cluster is already running with its {len(self.workers)} workers"
        if name in self.joiners or (req is not None and name == req.initializer.name):
            return f"worker name {name!r} is already taken in this cluster"
        if req is None:
            return None
        if join.worker_count != req.worker_count:
            return (
                f"worker-count mismatch: this worker says --worker-count {join.worker_count}, "
                f"the initializer {req.initializer.name!r} says {req.worker_count}"
            )
        if 1 + len(self.joiners) >= req.worker_count:
            return f"the cluster already has its {req.worker_count} workers (--worker-count)"
        return None

    def on_join(self, msg: JoinCluster, sender: Any) -> None:
        info = msg.worker
        why = self.refusal(msg)
        if why:
            log.warning("topology: refusing worker %r: %s", info.name, why)
            self.send(sender, JoinRefused(why))
            return
        self.joiners[info.name] = (msg, sender)
        log.info("topology: worker %r joined", info.name)
        self.maybe_place()

    def on_convention_update(self, msg: ActorSystemConventionUpdate) -> None:
        uid = (msg.remoteCapabilities or {}).get(WORKER_UID_CAPABILITY)
        if uid is None:
            return
        if msg.remoteAdded:
            self.registered.add(uid)
        else:
            self.registered.discard(uid)
            for name, (join, _) in list(self.joiners.items()):
                if join.worker.uid == uid and self.state == "gathering":
                    log.warning("topology: worker %r left before the cluster started", name)
                    del self.joiners[name]
        self.maybe_place()

    def maybe_place(self) -> None:
        req = self.request
        if self.state != "gathering" or req is None:
            return
        workers = [req.initializer] + sorted(
            (join.worker for join, _ in self.joiners.values()), key=lambda w: w.name
        )
        if len(workers) < req.worker_count:
            log.info("topology: %d of %d workers here; waiting", len(workers), req.worker_count)
            return
        if any(w.uid not in self.registered for w in workers):
            return  # a worker's admin has not joined the convention yet
        self.build(req, tuple(workers))

    # ---- building ---------------------------------------------------------

    def build(self, req: BuildCluster, workers: tuple[WorkerInfo, ...]) -> None:
        self.workers = workers
        app = load_application(req.app_path, req.initializer.app_args)
        self.plan = plan = compile_plan(app)
        names = [w.name for w in workers]
        with_sources = [w.name for w in workers if w.has_sources]
        tcp_sources = {
            st.name: with_sources
            for st in plan.stages
            if st.kind == "source"
            and not isinstance(app.stage(st.app_stages[0]).spec[1], GenSourceConfig)
        }
        self.placement = placement = place(
            plan, app, names, tcp_sources, partitions=req.settings.partitions
        )
        info = {w.name: w for w in workers}
        for p in placement.placed:
            cls = ACTOR_CLASSES[p.stage.kind]
            where = {"worker_uid": info[p.worker].uid}
            self.addresses[(p.id, p.worker)] = self.createActor(cls, targetActorRequirements=where)
        routes = wire(plan, placement, self.addresses)
        self.state = "configuring"
        for p in placement.placed:
            key = (p.id, p.worker)
            self.configuring.add(key)
            args = info[p.worker].app_args
            cfg = Configure(req.app_path, args, p.worker, p, routes[key], req.settings)
            self.send(self.addresses[key], cfg)
        log.info("topology: placing %d actors on %d workers", len(placement.placed), len(names))

    def on_configured(self, msg: Configured) -> None:
        if msg.error:
            self.fail(f"stage {msg.stage_id} on worker {msg.worker}: {msg.error}")
            return
        self.configuring.discard((msg.stage_id, msg.worker))
        if self.configuring or self.state != "configuring":
            return
        assert self.placement is not None
        self.state = "starting"
        for p in self.placement.placed:
            if p.stage.kind == "source":
                key = (p.id, p.worker)
                self.starting.add(key)
                self.send(self.addresses[key], StartSource())
        if not self.starting:
            self.ready()

    def on_source_started(self, msg: SourceStarted) -> None:
        if msg.error:
            self.fail(f"worker {msg.worker}: {msg.error}")
            return
        self.starting.discard((msg.stage_id, msg.worker))
        self.listening.setdefault(msg.worker, []).append(msg.address or "")
        if not self.starting and self.state == "starting":
            self.ready()

    def reply_all(self, msg: Any) -> None:
        """Answer the initializer's and every joined worker's command."""
        if self.requester is not None:
            self.send(self.requester, msg)
        for _, reply_to in self.joiners.values():
            self.send(reply_to, msg)

    def ready(self) -> None:
        self.state = "running"
        took = time.monotonic() - self.started_at
        log.info("topology: cluster running (%.2f s to gather, place and start)", took)
        self.reply_all(ClusterReady(self.summary()))

    def fail(self, reason: str) -> None:
        log.error("topology: %s", reason)
        if self.state != "failed":
            self.reply_all(ClusterFailed(reason))
        self.state = "failed"

    def summary(self) -> dict:
        assert self.plan is not None and self.placement is not None
        d = describe(self.plan, self.placement)
        d["sources"] = self.listening
        return d

    # ---- status -------------------------------------------------------------

    def on_status_query(self, sender: Any) -> None:
        self.status_waiters.append(sender)
        if len(self.status_waiters) > 1:
            return  # a round is under way; it answers everyone
        if self.state != "running":
            self.answer_status()
            return
        self.status_round += 1
        self.status_replies = {}
        for addr in self.addresses.values():
            self.send(addr, StatusQuery())
        self.wakeupAfter(STATUS_TIMEOUT, ("status", self.status_round))

    def on_stage_status(self, msg: StageStatus) -> None:
        self.status_replies[(msg.stage_id, msg.worker)] = {"kind": msg.kind, **msg.counters}
        if self.status_waiters and len(self.status_replies) == len(self.addresses):
            self.answer_status()

    def answer_status(self) -> None:
        waiters, self.status_waiters = self.status_waiters, []
        if not waiters:
            return
        status: dict[str, Any] = {
            "state": self.state,
            "processing_messages": self.state == "running",
            "worker_names": [w.name for w in self.workers],
            "worker_count": len(self.workers),
            "expected_workers": self.request.worker_count if self.request else None,
        }
        if self.plan is not None and self.placement is not None:
            status.update(self.summary())
            status["actors"] = {
                f"{sid}@{w}": figures for (sid, w), figures in sorted(self.status_replies.items())
            }
            missing = set(self.addresses) - set(self.status_replies)
            status["unanswered"] = sorted(f"{sid}@{w}" for sid, w in missing)
        for w in waiters:
            self.send(w, ClusterStatus(status))
