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

from thespian.actors import ActorExitRequest, ChildActorExited, PoisonMessage, WakeupMessage

from actorflow.loader import load_application
from actorflow.messages import (
    BuildCluster,
    ClusterFailed,
    ClusterReady,
    ClusterStatus,
    Configure,
    Configured,
    SourceStarted,
    StageStatus,
    StartSource,
    StatusQuery,
)
from actorflow.plan import Placement, Plan, compile_plan, describe, place, wire
from actorflow.runtime.sink import SinkActor
from actorflow.runtime.source import SourceActor
from actorflow.runtime.stage import PlacedActor
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
    """Builds the cluster from a BuildCluster request and answers status queries."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requester: Any = None
        self.plan: Plan | None = None
        self.placement: Placement | None = None
        self.addresses: dict[tuple[str, str], Any] = {}
        self.configuring: set[tuple[str, str]] = set()
        self.starting: set[tuple[str, str]] = set()
        self.listening: dict[str, list[str]] = {}
        self.state = "idle"  # idle | configuring | starting | running | failed
        self.started_at = 0.0
        self.workers: tuple = ()
        self.status_waiters: list[Any] = []
        self.status_replies: dict[tuple[str, str], dict] = {}
        self.status_round = 0

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        try:
            if isinstance(msg, BuildCluster):
                self.build(msg, sender)
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
                    log.warning("topology: actor %s exited", msg.childAddress)
            elif isinstance(msg, ActorExitRequest):
                pass
        except Exception:
            self.fail(f"topology actor error: {traceback.format_exc()}")

    # ---- building ---------------------------------------------------------

    def build(self, msg: BuildCluster, sender: Any) -> None:
        if self.state != "idle":
            self.send(sender, ClusterFailed("this cluster is already built"))
            return
        self.requester = sender
        self.workers = msg.workers
        self.started_at = time.monotonic()
        self.app_path = msg.app_path
        self.settings = msg.settings
        initializer = msg.workers[0]
        app = load_application(msg.app_path, initializer.app_args)
        self.plan = plan = compile_plan(app)
        names = [w.name for w in msg.workers]
        self.placement = placement = place(plan, app, names, partitions=msg.settings.partitions)
        args_of = {w.name: w.app_args for w in msg.workers}
        for p in placement.placed:
            cls = ACTOR_CLASSES[p.stage.kind]
            addr = self.createActor(cls, targetActorRequirements={"worker": p.worker})
            self.addresses[(p.id, p.worker)] = addr
        routes = wire(plan, placement, self.addresses)
        self.state = "configuring"
        for p in placement.placed:
            key = (p.id, p.worker)
            self.configuring.add(key)
            cfg = Configure(msg.app_path, args_of[p.worker], p.worker, p, routes[key], msg.settings)
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

    def ready(self) -> None:
        self.state = "running"
        took = time.monotonic() - self.started_at
        log.info("topology: cluster running (%.2f s to place and start)", took)
        self.send(self.requester, ClusterReady(self.summary()))

    def fail(self, reason: str) -> None:
        log.error("topology: %s", reason)
        if self.state != "failed" and self.requester is not None:
            self.send(self.requester, ClusterFailed(reason))
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
