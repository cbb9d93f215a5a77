"""The topology actor: gathers the workers, places actor groups on them, coordinates
checkpoints, notices lost workers and re-places the cluster when they come back.

It lives on the initializer. Records never pass through it: after start-up it
only starts checkpoints, answers status queries and watches the workers.

Recovery is a rollback of the whole placement to the last completed checkpoint:
the actors of the old placement are retired (or are gone with their worker), a
new placement with a higher epoch is created, state actors load their snapshots,
sources load their offsets, and replaying senders resume from there. Batches of
an older epoch are dropped wherever they arrive, so nothing of an old placement
goes on processing beside the new one.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
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
    CheckpointDone,
    CheckpointFailed,
    CheckpointReached,
    ClusterFailed,
    ClusterReady,
    ClusterStatus,
    Configure,
    Configured,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    JoinCluster,
    JoinRefused,
    Liveness,
    OwnerUnreachable,
    Retire,
    Retired,
    ShutdownCluster,
    ShutdownDone,
    SourceProgress,
    SourceStarted,
    StageStatus,
    StartCheckpoint,
    StartReporting,
    StartSource,
    StatusQuery,
    StopWorker,
    WorkerInfo,
)
from actorflow.plan import Placement, Plan, compile_plan, describe, fan_in, place, wire
from actorflow.resilience import ClusterState, WorkerFiles, stale_hint, write_state
from actorflow.runtime.reporter import MetricsReporter
from actorflow.runtime.sink import SinkActor
from actorflow.runtime.source import SourceActor
from actorflow.runtime.stage import (
    WORKER_CAPABILITY,
    WORKER_UID_CAPABILITY,
    PlacedActor,
)
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
RETIRE_TIMEOUT = timedelta(seconds=3)
HEARTBEAT_EVERY = timedelta(milliseconds=500)
LOST_AFTER = 3.0  # seconds without a heartbeat answer before a worker is lost (fenced)
LOST_HEARTBEAT_EVERY = 2.0  # seconds between heartbeats to a lost worker
DUPLICATE_WITHIN = 1.0  # a known incarnation that answered this recently is running
PLACE_TIMEOUT = timedelta(seconds=10)
CHECKPOINT_TIMEOUT = 10.0  # seconds before an unfinished checkpoint is abandoned


class TopologyActor(PlacedActor):
    """Gathers the workers, places the app, coordinates checkpoints and recovery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request: BuildCluster | None = None
        self.requester: Any = None
        self.waiting: list[Any] = []  # joined workers' commands waiting for ClusterReady
        self.cluster_id = ""
        self.members: dict[str, WorkerInfo] = {}  # current incarnation of each worker
        self.order: list[str] = []  # worker names in placement order (fixed once placed)
        self.registered: dict[str, str] = {}  # uid -> worker name, from the convention
        self.subscribed = False
        self.plan: Plan | None = None
        self.placement: Placement | None = None
        self.addresses: dict[tuple[str, str], Any] = {}
        self.old: dict[tuple[str, str], Any] = {}  # actors of the placement being replaced
        self.dead_workers: set[str] = set()  # their old actors died with them
        self.configuring: set[tuple[str, str]] = set()
        self.starting: set[tuple[str, str]] = set()
        self.listening: dict[str, list[str]] = {}
        self.state = "idle"  # idle|gathering|retiring|configuring|starting|running|recovering
        self.epoch = 0
        self.checkpoint = 0  # last completed
        self.next_checkpoint = 0
        self.pending: int | None = None  # checkpoint under way
        self.pending_since = 0.0
        self.reached: set[tuple[str, str]] = set()
        # per source: plain-sender records taken by each checkpoint started since the last
        # completed one (what a dead worker's sources took after it is lost, at least)
        self.progress: dict[tuple[str, str], dict[int, int]] = {}
        self.possibly_lost = 0
        self.dropped_for_lost = 0  # records routers dropped for lost workers (replayed)
        self.lost: set[str] = set()
        self.answered: dict[str, float] = {}  # worker -> when its guard last answered
        self.heartbeats = 0
        self.heartbeat_sent: dict[str, float] = {}
        self.shutdown_waiters: list[Any] = []
        self.started_at = 0.0
        self.placed_at = 0.0
        self.recoveries = 0
        self.ever_ready = False
        self.checkpoint_failure = ""
        self.status_waiters: list[Any] = []
        self.status_replies: dict[tuple[str, str], dict] = {}
        self.status_round = 0
        self.retire_round = 0

    def receiveMessage(self, msg: Any, sender: Any) -> None:  # noqa: N802
        if not self.subscribed:
            self.subscribed = True
            self.notifyOnSystemRegistrationChanges(True)
        try:
            self.dispatch(msg, sender)
        except Exception:
            self.fail(f"topology actor error: {traceback.format_exc()}")

    def dispatch(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, CheckpointReached):
            self.on_checkpoint_reached(msg)
        elif isinstance(msg, CheckpointFailed):
            if msg.epoch == self.epoch and msg.checkpoint == self.pending:
                self.abandon_checkpoint(msg.reason)
        elif isinstance(msg, HeartbeatAck):
            self.on_heartbeat_ack(msg)
        elif isinstance(msg, OwnerUnreachable):
            self.on_owner_unreachable(msg)
        elif isinstance(msg, SourceProgress):
            if msg.checkpoint >= self.checkpoint:
                seen = self.progress.setdefault((msg.stage_id, msg.worker), {})
                seen[msg.checkpoint] = msg.unreplayable
        elif isinstance(msg, WakeupMessage):
            self.on_wakeup(msg.payload)
        elif isinstance(msg, BuildCluster):
            self.on_build(msg, sender)
        elif isinstance(msg, JoinCluster):
            self.on_join(msg, sender)
        elif isinstance(msg, ActorSystemConventionUpdate):
            self.on_convention_update(msg)
        elif isinstance(msg, Configured):
            if self.current(msg, sender):
                self.on_configured(msg)
        elif isinstance(msg, SourceStarted):
            if self.current(msg, sender):
                self.on_source_started(msg)
        elif isinstance(msg, Retired):
            self.on_retired(msg)
        elif isinstance(msg, StatusQuery):
            self.on_status_query(sender)
        elif isinstance(msg, StageStatus):
            self.on_stage_status(msg)
        elif isinstance(msg, ShutdownCluster):
            self.on_shutdown(sender)
        elif isinstance(msg, PoisonMessage):
            log.warning("topology: a message could not be delivered: %r", msg.poisonMessage)
        elif isinstance(msg, ChildActorExited | ActorExitRequest):
            pass

    def current(self, msg: Any, sender: Any) -> bool:
        """True if ``msg`` comes from an actor of the current placement."""
        return msg.epoch == self.epoch and (msg.stage_id, msg.worker) in self.addresses

    # ---- gathering the workers ----------------------------------------------

    def on_build(self, msg: BuildCluster, sender: Any) -> None:
        if self.request is not None:
            self.send(sender, ClusterFailed("this cluster already has an initializer"))
            return
        self.request = msg
        self.requester = sender
        self.registered[msg.initializer.uid] = msg.initializer.name  # our own admin
        self.started_at = time.monotonic()
        self.state = "gathering"
        resume: ClusterState | None = msg.resume
        if resume is not None:
            self.cluster_id = resume.cluster_id
            self.epoch = resume.epoch
            self.checkpoint = self.next_checkpoint = resume.checkpoint
            self.order = list(resume.workers)
            self.old = dict(resume.addresses.get("actors", {}))
            self.dead_workers = {msg.initializer.name}  # our old actors died with us
            for name, info in resume.addresses.get("members", {}).items():
                if name != msg.initializer.name:
                    self.members[name] = info  # present once its admin registers again
            log.info(
                "topology: resuming cluster %s from checkpoint %d (epoch %d); waiting for %s",
                self.cluster_id,
                self.checkpoint,
                self.epoch,
                ", ".join(self.order),
            )
        else:
            self.cluster_id = uuid.uuid4().hex
        self.members[msg.initializer.name] = msg.initializer
        early, self.waiting = list(self.waiting), []
        for join, reply_to in early:
            self.on_join(join, reply_to)
        self.maybe_place()

    def refusal(self, join: JoinCluster) -> tuple[str, bool] | None:
        """Why this worker cannot join (and whether its files are stale), or None."""
        req, info = self.request, join.worker
        if req is None:
            return None
        if join.worker_count != req.worker_count:
            return (
                f"worker-count mismatch: this worker says --worker-count {join.worker_count}, "
                f"the initializer {req.initializer.name!r} says {req.worker_count}",
                False,
            )
        if join.settings is not None and join.settings != req.settings:
            differ = [
                f"--{f.replace('_', '-')} {getattr(join.settings, f)} (the cluster's: "
                f"{getattr(req.settings, f)})"
                for f in ("batch_size", "window", "partitions", "max_frame_size", "sink_buffer")
                if getattr(join.settings, f) != getattr(req.settings, f)
            ]
            if join.settings.checkpoint_every != req.settings.checkpoint_every:
                differ.append(
                    f"--time-between-checkpoints {join.settings.checkpoint_every:g} (the "
                    f"cluster's: {req.settings.checkpoint_every:g})"
                )
            if differ:
                return (f"settings differ from the initializer's: {', '.join(differ)}", False)
        if info.cluster_id is not None and info.cluster_id != self.cluster_id:
            return (f"its resilience files belong to another cluster ({info.cluster_id})", True)
        known = info.name in self.order
        if known and self.incarnation_alive(info.name):
            current = self.members[info.name]
            return (
                f"worker {info.name!r} is running already (its control address "
                f"{current.control} answers); stop it before starting it again",
                False,
            )
        if info.cluster_id is not None:
            if not known:
                return (f"worker {info.name!r} is not a member of cluster {self.cluster_id}", True)
            return None  # a member restarting from its files
        if known and not self.ever_ready:
            return None  # it died during the first placement, before it had files
        if self.order:  # placed before (or resuming): only members with their files
            if known:
                return (
                    f"worker {info.name!r} belongs to cluster {self.cluster_id} and must "
                    "restart from its resilience files, but has none in its --resilience-dir",
                    False,
                )
            return (f"the cluster is already running with its {len(self.order)} workers", False)
        if info.name in self.members:
            return (f"worker name {info.name!r} is already taken in this cluster", False)
        if len(self.members) >= req.worker_count:
            return (
                f"the cluster already has its {req.worker_count} workers (--worker-count)",
                False,
            )
        return None

    def incarnation_alive(self, name: str) -> bool:
        """True if the incarnation of ``name`` we know is still there."""
        current = self.members.get(name)
        if current is None or name in self.lost or name in self.dead_workers:
            return False
        if self.request is not None and name == self.request.initializer.name:
            return True
        recently = time.monotonic() - self.answered.get(name, float("-inf")) < DUPLICATE_WITHIN
        return current.uid in self.registered and recently

    def on_join(self, msg: JoinCluster, sender: Any) -> None:
        if self.request is None:
            self.waiting.append((msg, sender))  # checked when the initializer asks
            return
        info = msg.worker
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
        rejoin = info.name in self.order
        self.members[info.name] = info
        self.answered[info.name] = time.monotonic()  # a new incarnation: heard from now
        self.waiting.append((msg, sender))
        log.info("topology: worker %r %s", info.name, "rejoined" if rejoin else "joined")
        if rejoin:
            # Its old actors died with it; whatever runs elsewhere must roll back.
            self.dead_workers.add(info.name)
            if self.state in ("running", "recovering", "retiring", "configuring", "starting"):
                self.lost.discard(info.name)
                self.begin_recovery(f"worker {info.name!r} restarted")
                return
        self.maybe_place()

    def on_convention_update(self, msg: ActorSystemConventionUpdate) -> None:
        caps = msg.remoteCapabilities or {}
        uid = caps.get(WORKER_UID_CAPABILITY)
        if uid is None:
            return
        if msg.remoteAdded:
            self.registered[uid] = caps.get(WORKER_CAPABILITY, "?")
        else:
            self.registered.pop(uid, None)
            if self.state == "gathering" and not self.order:
                for name, info in list(self.members.items()):
                    if info.uid == uid and self.request and name != self.request.initializer.name:
                        log.warning("topology: worker %r left before the cluster started", name)
                        del self.members[name]
        self.maybe_place()

    def maybe_place(self) -> None:
        req = self.request
        if req is None or self.state not in ("gathering", "recovering"):
            return
        names = self.order or [req.initializer.name] + sorted(
            n for n in self.members if n != req.initializer.name
        )
        missing = [n for n in names if n not in self.members or n in self.lost]
        if len(names) < req.worker_count or missing:
            waiting_for = missing or [f"{req.worker_count - len(names)} more"]
            log.info("topology: waiting for worker(s) %s", ", ".join(waiting_for))
            return
        if any(self.members[n].uid not in self.registered for n in names):
            return  # a worker's admin has not joined the convention yet
        self.order = names
        self.place_all()

    # ---- placing ------------------------------------------------------------

    def count_dead_sources_loss(self) -> None:
        """Plain-sender records that sources on dead workers took after the checkpoint
        we roll back to (a lower bound: what came after their last barrier is unknown)."""
        for (_, worker), seen in self.progress.items():
            if worker in self.dead_workers and seen:
                self.possibly_lost += max(seen.values()) - seen.get(self.checkpoint, 0)
        self.progress = {}

    def place_all(self) -> None:
        """Retire the previous placement (if any), then place the app anew."""
        self.count_dead_sources_loss()
        self.epoch += 1
        self.pending = None
        self.reached.clear()
        self.retire_round += 1
        alive = {key: addr for key, addr in self.old.items() if key[1] not in self.dead_workers}
        self.old = {}
        self.dead_workers = set()
        if alive:
            self.state = "retiring"
            self.retiring = set(alive)
            for addr in alive.values():
                self.send(addr, Retire(self.epoch))
            self.wakeupAfter(RETIRE_TIMEOUT, ("retire", self.retire_round))
        else:
            self.create_placement()

    def on_retired(self, msg: Retired) -> None:
        self.possibly_lost += msg.unreplayable
        self.dropped_for_lost += msg.dropped
        if self.state != "retiring":
            return
        self.retiring.discard((msg.stage_id, msg.worker))
        if not self.retiring:
            self.create_placement()

    def create_placement(self) -> None:
        req = self.request
        assert req is not None
        self.state = "configuring"
        self.placed_at = time.monotonic()
        app = load_application(req.app_path, req.initializer.app_args)
        self.plan = plan = compile_plan(app)
        with_sources = [n for n in self.order if self.members[n].has_sources]
        tcp_sources = {
            st.name: with_sources
            for st in plan.stages
            if st.kind == "source"
            and not isinstance(app.stage(st.app_stages[0]).spec[1], GenSourceConfig)
        }
        self.placement = placement = place(
            plan, app, self.order, tcp_sources, partitions=req.settings.partitions
        )
        self.addresses = {}
        reporters = self.start_reporters(app.name)
        for p in placement.placed:
            where = {"worker_uid": self.members[p.worker].uid}
            self.addresses[(p.id, p.worker)] = self.createActor(
                ACTOR_CLASSES[p.stage.kind], targetActorRequirements=where
            )
        self.save()  # the epoch first: a restarted initializer must place above it
        routes = wire(plan, placement, self.addresses)
        inputs = fan_in(plan, placement)
        self.configuring = set()
        self.listening = {}
        app_name = app.name
        for p in placement.placed:
            key = (p.id, p.worker)
            info = self.members[p.worker]
            files = WorkerFiles(info.resilience_dir, app_name, p.worker)
            self.configuring.add(key)
            cfg = Configure(
                req.app_path,
                info.app_args,
                p.worker,
                p,
                routes[key],
                req.settings,
                epoch=self.epoch,
                inputs=inputs[key],
                restore=self.checkpoint,
                files=files,
                coordinator=self.myAddress,
                metrics=reporters.get(p.worker),
            )
            self.send(self.addresses[key], cfg)
        self.wakeupAfter(PLACE_TIMEOUT, ("placing", self.epoch))
        log.info(
            "topology: placing %d actors on %d workers (epoch %d%s)",
            len(placement.placed),
            len(self.order),
            self.epoch,
            f", from checkpoint {self.checkpoint}" if self.checkpoint else "",
        )

    def start_reporters(self, app_name: str) -> dict[str, Any]:
        """A metrics reporter on every worker started with --metrics."""
        reporters = {}
        for name in self.order:
            info = self.members[name]
            if not info.metrics:
                continue
            host, _, port = info.metrics.rpartition(":")
            addr = self.createActor(
                MetricsReporter, targetActorRequirements={"worker_uid": info.uid}
            )
            self.send(addr, StartReporting(app_name, name, (host, int(port)), 1.0))
            self.addresses[("reporter", name)] = reporters[name] = addr
        return reporters

    def on_configured(self, msg: Configured) -> None:
        if self.state != "configuring" or (msg.stage_id, msg.worker) not in self.configuring:
            return
        if msg.error:
            self.fail(f"stage {msg.stage_id} on worker {msg.worker}: {msg.error}")
            return
        self.configuring.discard((msg.stage_id, msg.worker))
        if self.configuring:
            return
        assert self.placement is not None
        self.state = "starting"
        self.save()  # every actor's address is known now
        self.starting = set()
        for p in self.placement.placed:
            if p.stage.kind == "source":
                key = (p.id, p.worker)
                self.starting.add(key)
                self.send(self.addresses[key], StartSource())
        if not self.starting:
            self.ready()

    def on_source_started(self, msg: SourceStarted) -> None:
        if self.state != "starting":
            return
        if msg.error:
            self.fail(f"worker {msg.worker}: {msg.error}")
            return
        self.starting.discard((msg.stage_id, msg.worker))
        self.listening.setdefault(msg.worker, []).append(msg.address or "")
        if not self.starting:
            self.ready()

    def ready(self) -> None:
        req = self.request
        assert req is not None
        first = self.recoveries == 0 and not req.resume
        self.state = "running"
        if not self.ever_ready:
            self.wakeupAfter(HEARTBEAT_EVERY, ("heartbeat", 0))
        self.ever_ready = True
        now = time.monotonic()
        for name in self.order:
            self.answered.setdefault(name, now)
        self.save()
        took = time.monotonic() - (self.started_at if first else self.placed_at)
        log.info(
            "topology: cluster running (epoch %d, %.2f s to %s)",
            self.epoch,
            took,
            "gather, place and start" if first else "place and start",
        )
        if self.possibly_lost:
            log.warning(
                "topology: up to %d records from senders that cannot replay may have been "
                "lost in the rollback (use a replaying sender: actorflow send --acked)",
                self.possibly_lost,
            )
        ready = ClusterReady(
            self.summary(),
            self.cluster_id,
            tuple((n, self.members[n].control) for n in self.order),
        )
        if self.requester is not None:
            self.send(self.requester, ready)
            self.requester = None
        waiting, self.waiting = self.waiting, []
        for _, reply_to in waiting:
            self.send(reply_to, ready)
        self.schedule_checkpoint()

    def save(self) -> None:
        """Persist what a restarted initializer needs: checkpoint, epoch, members, actors."""
        req = self.request
        if req is None or req.files is None:
            return
        state = ClusterState(
            self.cluster_id,
            self.checkpoint,
            self.epoch,
            list(self.order),
            {"actors": dict(self.addresses), "members": dict(self.members)},
        )
        write_state(req.files, state)

    def fail(self, reason: str) -> None:
        log.error("topology: %s", reason)
        if self.state != "failed":
            failed = ClusterFailed(reason)
            if self.requester is not None:
                self.send(self.requester, failed)
            for _, reply_to in self.waiting:
                self.send(reply_to, failed)
        self.state = "failed"

    def summary(self) -> dict:
        assert self.plan is not None and self.placement is not None
        d = describe(self.plan, self.placement)
        d["sources"] = self.listening
        return d

    # ---- checkpoints ------------------------------------------------------------

    def schedule_checkpoint(self) -> None:
        req = self.request
        if req is not None and req.settings.checkpoint_every > 0:
            every = timedelta(seconds=req.settings.checkpoint_every)
            self.wakeupAfter(every, ("checkpoint", self.epoch))

    def start_checkpoint(self) -> None:
        assert self.placement is not None
        sources = [p for p in self.placement.placed if p.stage.kind == "source"]
        if self.state != "running" or self.pending is not None or not sources:
            return
        self.next_checkpoint = max(self.next_checkpoint, self.checkpoint) + 1
        self.pending = self.next_checkpoint
        self.pending_since = time.monotonic()
        self.reached = set()
        for p in sources:
            self.send(self.addresses[(p.id, p.worker)], StartCheckpoint(self.pending, self.epoch))

    def abandon_checkpoint(self, why: str) -> None:
        log.error(
            "topology: checkpoint %s abandoned: %s; the last completed one stays %d",
            self.pending,
            why,
            self.checkpoint,
        )
        self.checkpoint_failure = f"checkpoint {self.pending}: {why}"
        self.pending = None

    def on_checkpoint_reached(self, msg: CheckpointReached) -> None:
        if msg.epoch != self.epoch or msg.checkpoint != self.pending:
            return
        assert self.placement is not None
        self.reached.add((msg.stage_id, msg.worker))
        ends = {(p.id, p.worker) for p in self.placement.placed if p.stage.kind == "sink"}
        if not ends <= self.reached:
            return
        self.checkpoint = msg.checkpoint
        self.pending = None
        for seen in self.progress.values():
            for old in [c for c in seen if c < self.checkpoint]:
                del seen[old]
        self.save()
        took = time.monotonic() - self.pending_since
        log.debug("topology: checkpoint %d complete in %.3f s", self.checkpoint, took)
        done = CheckpointDone(self.checkpoint, self.epoch)
        for p in self.placement.placed:
            if p.stage.kind in ("source", "state"):
                self.send(self.addresses[(p.id, p.worker)], done)
        if self.shutdown_waiters:
            self.finish_shutdown()

    # ---- watching the workers -----------------------------------------------

    def on_wakeup(self, payload: Any) -> None:
        if not isinstance(payload, tuple):
            return
        what, round_ = payload[0], payload[1]
        if what == "status" and round_ == self.status_round:
            self.answer_status()
        elif what == "retire" and round_ == self.retire_round and self.state == "retiring":
            log.warning(
                "topology: %d old actors did not answer Retire; epochs fence them",
                len(self.retiring),
            )
            self.create_placement()
        elif what == "checkpoint" and round_ == self.epoch and self.state == "running":
            if self.pending is not None and time.monotonic() - self.pending_since > max(
                CHECKPOINT_TIMEOUT, 10 * self.request.settings.checkpoint_every
            ):
                self.abandon_checkpoint("it did not complete in time (a receiver away?)")
            self.start_checkpoint()
            self.schedule_checkpoint()
        elif what == "heartbeat" and self.state not in ("stopping", "failed"):
            self.heartbeat()
            self.wakeupAfter(HEARTBEAT_EVERY, ("heartbeat", 0))
        elif (
            what == "placing" and round_ == self.epoch and self.state in ("configuring", "starting")
        ):
            # A worker died while we placed on it: wait for it to come back.
            self.find_lost(recover=False, within=2 * HEARTBEAT_EVERY.total_seconds())
            if self.lost:
                self.begin_recovery(f"worker(s) {', '.join(sorted(self.lost))} lost while placing")
            else:
                self.fail(f"the placement did not complete within {PLACE_TIMEOUT.seconds} s")

    def heartbeat(self) -> None:
        """Heartbeat every worker's guard; fence the silent ones; tell the stages."""
        me = self.request.initializer.name if self.request else None
        now = time.monotonic()
        self.heartbeats += 1
        for name in self.order:
            info = self.members.get(name)
            if name == me or info is None or info.guard is None:
                continue
            if name in self.lost and now - self.heartbeat_sent.get(name, 0) < LOST_HEARTBEAT_EVERY:
                continue  # a lost worker's transmits queue up: ask it seldom
            self.heartbeat_sent[name] = now
            self.send(info.guard, Heartbeat(self.heartbeats))
        self.find_lost(recover=self.state == "running", within=LOST_AFTER)
        if self.heartbeats % 2 == 0:
            liveness = Liveness(tuple(sorted(self.lost | self.dead_workers)), self.epoch)
            for (_, worker), addr in list(self.addresses.items()) + list(self.old.items()):
                if worker not in self.lost and worker not in self.dead_workers:
                    self.send(addr, liveness)

    def find_lost(self, recover: bool, within: float) -> None:
        """Workers whose guard has not answered ``within`` seconds are lost."""
        me = self.request.initializer.name if self.request else None
        now = time.monotonic()
        for name in self.order:
            if name == me or name in self.lost or name not in self.members:
                continue
            silent = now - self.answered.get(name, now)
            if silent < within:
                continue
            self.lost.add(name)
            self.dead_workers.add(name)
            log.error(
                "topology: worker %r is lost (no answer to heartbeats for %.1f s); it is "
                "fenced until it answers again or restarts with the same command",
                name,
                silent,
            )
            if recover:
                self.begin_recovery(f"worker {name!r} was lost")

    def on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        info = self.members.get(msg.worker)
        if info is None or info.uid != msg.uid:
            return  # an incarnation that was replaced
        self.answered[msg.worker] = time.monotonic()
        if msg.worker not in self.lost:
            return
        # It never died: it was stopped or cut off. Its actors (of an old epoch) are
        # retired with the others' and it takes its place again in a new placement.
        self.lost.discard(msg.worker)
        self.dead_workers.discard(msg.worker)
        why = f"worker {msg.worker!r} answers again after it was lost"
        log.warning("topology: %s; fencing its old actors", why)
        if info.guard is not None:
            self.send(info.guard, Fenced(self.epoch + 1, why))
        if self.state in ("running", "recovering", "retiring", "configuring", "starting"):
            self.begin_recovery(why)

    def on_owner_unreachable(self, msg: OwnerUnreachable) -> None:
        """A router drops records for a worker it lost: only a rollback replays them."""
        if self.state != "running" or msg.worker in self.lost:
            return  # a recovery is under way already, or the loss is known
        silent = time.monotonic() - self.answered.get(msg.worker, 0.0)
        if silent > 2 * HEARTBEAT_EVERY.total_seconds():
            return  # heartbeats will find it lost and recover
        self.begin_recovery(
            f"{msg.stage_id}@{msg.reporter} dropped records for worker {msg.worker!r}, "
            "which answers again"
        )

    def begin_recovery(self, why: str) -> None:
        """Stop checkpoints; re-place everything once every worker is back."""
        if self.state != "recovering":
            self.recoveries += 1
        if self.state in ("running", "starting", "configuring"):
            self.old.update(self.addresses)
            self.addresses = {}
        self.pending = None
        self.state = "recovering"
        log.warning("topology: recovery: %s; rolling back to checkpoint %d", why, self.checkpoint)
        self.maybe_place()

    # ---- shutting down ------------------------------------------------------

    def on_shutdown(self, sender: Any) -> None:
        if self.request is None:
            self.send(sender, ShutdownDone(0, (), "not the initializer's control address"))
            return
        self.shutdown_waiters.append(sender)
        if self.state == "running":
            if self.pending is None:
                self.start_checkpoint()
            if self.pending is None:  # nothing to checkpoint (no sources)
                self.finish_shutdown()
        else:
            self.finish_shutdown(
                f"the cluster is {self.state}; files are from checkpoint {self.checkpoint}"
            )

    def finish_shutdown(self, error: str | None = None) -> None:
        names = tuple(self.order)
        done = ShutdownDone(self.checkpoint, names, error)
        for waiter in self.shutdown_waiters:
            self.send(waiter, done)
        self.shutdown_waiters = []
        self.state = "stopping"
        log.info("topology: shutting down the cluster at checkpoint %d", self.checkpoint)
        for name in self.order:
            guard = self.members[name].guard
            if guard is not None:
                self.send(guard, StopWorker())

    # ---- status -------------------------------------------------------------

    def on_status_query(self, sender: Any) -> None:
        if self.request is None:  # asked through a joiner's admin: no cluster here
            self.send(sender, ClusterStatus({"state": "not the initializer"}))
            return
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
        names = self.order or list(self.members)
        status: dict[str, Any] = {
            "state": self.state,
            "processing_messages": self.state == "running",
            "worker_names": names,
            "worker_count": len(names),
            "expected_workers": self.request.worker_count if self.request else None,
            "cluster_id": self.cluster_id,
            "epoch": self.epoch,
            "last_checkpoint": self.checkpoint,
            "lost_workers": sorted(self.lost),
            "recoveries": self.recoveries,
            "records_possibly_lost": self.possibly_lost,
            "records_dropped_for_lost_workers": self.dropped_for_lost,
            "last_checkpoint_failure": self.checkpoint_failure,
        }
        if self.plan is not None and self.placement is not None:
            status.update(self.summary())
            status["actors"] = {
                f"{sid}@{w}": figures for (sid, w), figures in sorted(self.status_replies.items())
            }
            refusals: dict[str, int] = {}
            for (_, w), figures in self.status_replies.items():
                refusals[w] = max(refusals.get(w, 0), figures.get("messages_refused", 0))
            status["messages_refused"] = refusals
            missing = set(self.addresses) - set(self.status_replies)
            status["unanswered"] = sorted(f"{sid}@{w}" for sid, w in missing)
        for w in waiters:
            self.send(w, ClusterStatus(status))
