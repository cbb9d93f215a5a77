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

A grow (a worker started with --join) or a shrink (``actorflow shrink``) is the
same rollout onto a new worker list and new owner tables, at a checkpoint taken
for it (see :mod:`actorflow.runtime.autoscale`).
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
    CheckpointDone,
    CheckpointFailed,
    CheckpointReached,
    ClusterFailed,
    ClusterReady,
    Configure,
    Configured,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    JoinCluster,
    Liveness,
    OwnerUnreachable,
    Retire,
    Retired,
    ShrinkCluster,
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
)
from actorflow.plan import Placement, Plan, compile_plan, describe, fan_in, place, wire
from actorflow.resilience import ClusterState, WorkerFiles, write_state
from actorflow.runtime.autoscale import Rescale, Step
from actorflow.runtime.checkpoints import CheckpointCoordinator
from actorflow.runtime.connector_sink import ConnectorSinkActor
from actorflow.runtime.connector_source import ConnectorSourceActor
from actorflow.runtime.gathering import Gathering
from actorflow.runtime.membership import (
    HEARTBEAT_EVERY,
    LOST_AFTER,
    Membership,
)
from actorflow.runtime.phases import PLACED, Phase, Timer, TimerKind
from actorflow.runtime.reporter import MetricsReporter
from actorflow.runtime.rescaling import Rescaling
from actorflow.runtime.stage import (
    PlacedActor,
)
from actorflow.runtime.status import StatusRounds
from actorflow.runtime.step import ChainActor, RouterActor, StateActor

log = logging.getLogger("actorflow.topology")

ACTOR_CLASSES = {
    "source": ConnectorSourceActor,  # the TCP source too (actorflow/runtime/source.py)
    "chain": ChainActor,
    "router": RouterActor,
    "state": StateActor,
    "sink": ConnectorSinkActor,  # the TCP sink too (actorflow/runtime/sink.py)
}

RETIRE_TIMEOUT = timedelta(seconds=3)
PLACE_TIMEOUT = timedelta(seconds=10)
HEARTBEAT_PERIOD = timedelta(seconds=HEARTBEAT_EVERY)


class TopologyActor(Gathering, Rescaling, StatusRounds, PlacedActor):
    """Gathers the workers, places the app, coordinates checkpoints and recovery."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.request: BuildCluster | None = None
        self.requester: Any = None
        self.waiting: list[Any] = []  # joined workers' commands waiting for ClusterReady
        self.cluster_id = ""
        self.membership = Membership()
        self.checkpoints = CheckpointCoordinator()
        self.subscribed = False
        self.plan: Plan | None = None
        self.placement: Placement | None = None
        self.addresses: dict[tuple[str, str], Any] = {}
        self.old: dict[tuple[str, str], Any] = {}  # actors of the placement being replaced
        self.configuring: set[tuple[str, str]] = set()
        self.starting: set[tuple[str, str]] = set()
        self.retiring: set[tuple[str, str]] = set()
        self.listening: dict[str, list[str]] = {}
        self.state = Phase.IDLE
        self.epoch = 0
        self.dropped_for_lost = 0  # records routers dropped for lost workers (replayed)
        self.heartbeats = 0
        self.shutdown_waiters: list[Any] = []
        self.started_at = 0.0
        self.placed_at = 0.0
        self.recoveries = 0
        self.ever_ready = False
        self.status_waiters: list[Any] = []
        self.status_replies: dict[tuple[str, str], dict] = {}
        self.status_round = 0
        self.retire_round = 0
        self.tables: dict[str, tuple[str, ...]] = {}  # stage id -> owner of each partition
        self.checkpoint_tables: dict[str, tuple[str, ...]] = {}  # at the last checkpoint
        self.table_version = 0
        self.rescale: Rescale | None = None
        self.last_rescale: dict | None = None
        self.source_addresses: dict[tuple[str, str], str] = {}  # (stage, worker) -> host:port
        self.kept: dict[tuple[str, str], Any] = {}  # sources the next placement keeps
        self.left: set[str] = set()  # workers that left in a shrink
        self.rescales_done = 0
        self.paused_total = 0.0  # seconds processing paused for grows and shrinks
        self.stream_offsets: dict[tuple[str, str, int], dict] = {}  # (stage, worker, cp)

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
            if msg.epoch == self.epoch and msg.checkpoint == self.checkpoints.pending:
                self.abandon_checkpoint(msg.reason)
        elif isinstance(msg, HeartbeatAck):
            self.on_heartbeat_ack(msg)
        elif isinstance(msg, OwnerUnreachable):
            self.on_owner_unreachable(msg)
        elif isinstance(msg, SourceProgress):
            self.checkpoints.note_progress(
                msg.stage_id, msg.worker, msg.checkpoint, msg.unreplayable
            )
            self.note_stream_offsets(msg)
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
        elif isinstance(msg, ShrinkCluster):
            self.on_shrink(msg, sender)
        elif isinstance(msg, PoisonMessage):
            log.warning("topology: a message could not be delivered: %r", msg.poisonMessage)
        elif isinstance(msg, ChildActorExited | ActorExitRequest):
            pass

    def current(self, msg: Any, sender: Any) -> bool:
        """True if ``msg`` comes from an actor of the current placement."""
        return msg.epoch == self.epoch and (msg.stage_id, msg.worker) in self.addresses

    # ---- placing ------------------------------------------------------------

    def place_all(self) -> None:
        """Retire the previous placement (if any), then place the app anew."""
        self.checkpoints.count_loss(self.membership.dead)
        self.epoch += 1
        self.checkpoints.cancel()
        self.retire_round += 1
        dead = self.membership.dead
        alive = {key: addr for key, addr in self.old.items() if key[1] not in dead}
        self.old = {}
        dead.clear()
        if alive:
            self.state = Phase.RETIRING
            self.retiring = set(alive)
            for key, addr in alive.items():
                self.send(addr, Retire(self.epoch, self.moved_to(key)))
            self.wakeupAfter(RETIRE_TIMEOUT, Timer(TimerKind.RETIRE, self.retire_round))
        else:
            self.create_placement()

    def on_retired(self, msg: Retired) -> None:
        self.checkpoints.possibly_lost += msg.unreplayable
        self.dropped_for_lost += msg.dropped
        if self.state != "retiring":
            return
        self.retiring.discard((msg.stage_id, msg.worker))
        if not self.retiring:
            self.create_placement()

    def create_placement(self) -> None:
        req = self.request
        assert req is not None
        self.state = Phase.CONFIGURING
        self.placed_at = time.monotonic()
        app = load_application(req.app_path, req.initializer.app_args)
        self.plan = plan = compile_plan(app, req.settings.state_actors)
        with_sources = [n for n in self.membership.order if self.membership.members[n].has_sources]
        tcp_sources = {
            st.name: with_sources
            for st in plan.stages
            if st.kind == "source"
            and not isinstance(app.stage(st.app_stages[0]).spec[1], GenSourceConfig)
        }
        self.placement = placement = place(
            plan,
            app,
            self.membership.order,
            tcp_sources,
            partitions=req.settings.partitions,
            tables=self.tables,
        )
        self.tables = dict(placement.owners)
        self.addresses = {}
        reporters = self.start_reporters(app.name)
        kept, self.kept = self.kept, {}
        for p in placement.placed:
            key = (p.id, p.worker)
            if key in kept:  # a source of a staying worker in a grow or shrink
                self.addresses[key] = kept[key]
                continue
            where = {"worker_uid": self.membership.members[p.worker].uid}
            self.addresses[key] = self.createActor(
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
            info = self.membership.members[p.worker]
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
                restore=self.restore_point(p),
                files=files,
                coordinator=self.myAddress,
                metrics=reporters.get(p.worker),
                restore_from=self.restore_from(p, app_name),
                adopt_offsets=self.adopted_streams(p),
                keep=key in kept,
            )
            self.send(self.addresses[key], cfg)
        self.wakeupAfter(PLACE_TIMEOUT, Timer(TimerKind.PLACING, self.epoch))
        log.info(
            "topology: placing %d actors on %d workers (epoch %d%s)",
            len(placement.placed),
            len(self.membership.order),
            self.epoch,
            f", from checkpoint {self.checkpoints.completed}" if self.checkpoints.completed else "",
        )

    def start_reporters(self, app_name: str) -> dict[str, Any]:
        """A metrics reporter on every worker started with --metrics."""
        reporters = {}
        for name in self.membership.order:
            info = self.membership.members[name]
            if not info.metrics:
                continue
            host, _, port = info.metrics.rpartition(":")
            addr = self.createActor(
                MetricsReporter, targetActorRequirements={"worker_uid": info.uid}
            )
            cluster = self.cluster_figures() if name == self.membership.initializer else None
            self.send(addr, StartReporting(app_name, name, (host, int(port)), 1.0, cluster))
            self.addresses[("reporter", name)] = reporters[name] = addr
        return reporters

    def cluster_figures(self) -> dict[str, float]:
        """What the initializer's reporter tells the metrics hub of grows and shrinks."""
        last = (self.last_rescale or {}).get("pause_seconds", 0.0)
        return {
            "table_version": self.table_version,
            "rescales": self.rescales_done,
            "last_pause_seconds": last,
            "paused_seconds_total": round(self.paused_total, 3),
        }

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
        self.state = Phase.STARTING
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
        self.source_addresses[(msg.stage_id, msg.worker)] = msg.address or ""
        if not self.starting:
            self.ready()

    def ready(self) -> None:
        req = self.request
        assert req is not None
        first = not self.ever_ready and not req.resume
        self.state = Phase.RUNNING
        if not self.ever_ready:
            self.wakeupAfter(HEARTBEAT_PERIOD, Timer(TimerKind.HEARTBEAT, 0))
        self.ever_ready = True
        now = time.monotonic()
        for name in self.membership.order:
            self.membership.answered.setdefault(name, now)
        self.save()
        took = time.monotonic() - (self.started_at if first else self.placed_at)
        log.info(
            "topology: cluster running (epoch %d, %.2f s to %s)",
            self.epoch,
            took,
            "gather, place and start" if first else "place and start",
        )
        if self.checkpoints.possibly_lost:
            log.warning(
                "topology: up to %d records from senders that cannot replay may have been "
                "lost in the rollback (use a replaying sender: actorflow send --acked)",
                self.checkpoints.possibly_lost,
            )
        ready = ClusterReady(
            self.summary(),
            self.cluster_id,
            tuple((n, self.membership.members[n].control) for n in self.membership.order),
        )
        if self.requester is not None:
            self.send(self.requester, ready)
            self.requester = None
        r = self.rescale
        later = r.joining if r is not None and r.step == Step.CUT else ()
        waiting = [(j, to) for j, to in self.waiting if j.worker.name not in later]
        self.waiting = [(j, to) for j, to in self.waiting if j.worker.name in later]
        for _, reply_to in waiting:
            self.send(reply_to, ready)
        self.schedule_checkpoint()
        if r is not None and r.step == Step.MOVE:
            r.step, r.ready_at = Step.SETTLE, time.monotonic()
            log.info(
                "topology: %s: %d partitions moved; processing paused %.2f s; checkpointing "
                "the new layout",
                r.kind,
                r.partitions_moved,
                r.ready_at - r.moving_at,
            )
        if r is not None:
            self.start_checkpoint()

    def save(self) -> None:
        """Persist what a restarted initializer needs: checkpoint, epoch, members, actors."""
        req = self.request
        if req is None or req.files is None:
            return
        state = ClusterState(
            self.cluster_id,
            self.checkpoints.completed,
            self.epoch,
            list(self.membership.order),
            {"actors": dict(self.addresses), "members": dict(self.membership.members)},
            tables=dict(self.tables),
            checkpoint_tables=dict(self.checkpoint_tables),
            table_version=self.table_version,
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
        self.state = Phase.FAILED

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
            self.wakeupAfter(every, Timer(TimerKind.CHECKPOINT, self.epoch))

    def start_checkpoint(self, hold: bool = False) -> int:
        """Start the next checkpoint (``hold``: the sources stop after its barrier, the
        cut of a grow or shrink); its number, or 0 if none can start now."""
        assert self.placement is not None
        sources = [p for p in self.placement.placed if p.stage.kind == "source"]
        if self.state != Phase.RUNNING or self.checkpoints.pending is not None or not sources:
            return 0
        start = StartCheckpoint(self.checkpoints.begin(time.monotonic()), self.epoch, hold)
        for p in sources:
            self.send(self.addresses[(p.id, p.worker)], start)
        return start.checkpoint

    def abandon_checkpoint(self, why: str) -> None:
        log.error(
            "topology: checkpoint %s abandoned: %s; the last completed one stays %d",
            self.checkpoints.pending,
            why,
            self.checkpoints.completed,
        )
        pending = self.checkpoints.pending
        self.checkpoints.abandon(why)
        r = self.rescale
        if r is not None and r.step == Step.CUT and r.hold_at == pending:
            self.abandon_rescale(f"its checkpoint {pending} was abandoned: {why}")

    def on_checkpoint_reached(self, msg: CheckpointReached) -> None:
        if msg.epoch != self.epoch:
            return
        assert self.placement is not None
        sinks = {(p.id, p.worker) for p in self.placement.placed if p.stage.kind == "sink"}
        if not self.checkpoints.reach(msg.stage_id, msg.worker, msg.checkpoint, sinks):
            return
        self.checkpoint_tables = dict(self.tables)
        self.save()
        took = time.monotonic() - self.checkpoints.pending_since
        log.debug("topology: checkpoint %d complete in %.3f s", msg.checkpoint, took)
        done = CheckpointDone(msg.checkpoint, self.epoch)
        for p in self.placement.placed:
            if p.stage.kind in ("source", "state", "sink"):
                self.send(self.addresses[(p.id, p.worker)], done)
        if self.shutdown_waiters:
            self.finish_shutdown()
        else:
            self.advance_rescale()

    # ---- watching the workers -----------------------------------------------

    def on_wakeup(self, payload: Any) -> None:
        if not isinstance(payload, Timer):
            return
        what, round_ = payload
        if what == TimerKind.STATUS and round_ == self.status_round:
            self.answer_status()
        elif what == TimerKind.RETIRE and round_ == self.retire_round:
            if self.state == Phase.RETIRING:
                log.warning(
                    "topology: %d old actors did not answer Retire; epochs fence them",
                    len(self.retiring),
                )
                self.create_placement()
        elif what == TimerKind.CHECKPOINT and round_ == self.epoch:
            if self.state == Phase.RUNNING:
                assert self.request is not None
                if self.checkpoints.overdue(
                    time.monotonic(), self.request.settings.checkpoint_every
                ):
                    self.abandon_checkpoint("it did not complete in time (a receiver away?)")
                self.check_rescale(time.monotonic())
                self.start_checkpoint()
                self.schedule_checkpoint()
        elif what == TimerKind.HEARTBEAT:
            if self.state not in (Phase.STOPPING, Phase.FAILED):
                self.heartbeat()
                self.wakeupAfter(HEARTBEAT_PERIOD, Timer(TimerKind.HEARTBEAT, 0))
        elif what == TimerKind.PLACING and round_ == self.epoch:
            if self.state in (Phase.CONFIGURING, Phase.STARTING):
                # A worker died while we placed on it: wait for it to come back.
                self.find_lost(recover=False, within=2 * HEARTBEAT_EVERY)
                lost = self.membership.lost
                if lost:
                    self.begin_recovery(f"worker(s) {', '.join(sorted(lost))} lost while placing")
                else:
                    self.fail(f"the placement did not complete within {PLACE_TIMEOUT.seconds} s")

    def heartbeat(self) -> None:
        """Heartbeat every worker's guard; fence the silent ones; tell the stages."""
        now = time.monotonic()
        self.heartbeats += 1
        for _, guard in self.membership.heartbeat_targets(now):
            self.send(guard, Heartbeat(self.heartbeats))
        moving = self.rescale is not None and self.state in (Phase.CONFIGURING, Phase.STARTING)
        self.find_lost(recover=self.state == Phase.RUNNING or moving, within=LOST_AFTER)
        if self.heartbeats % 2 == 0:
            fenced = self.membership.fenced()
            liveness = Liveness(fenced, self.epoch)
            for (_, worker), addr in list(self.addresses.items()) + list(self.old.items()):
                if worker not in fenced:
                    self.send(addr, liveness)

    def find_lost(self, recover: bool, within: float) -> None:
        """Workers whose guard has not answered for ``within`` seconds are lost."""
        for name, silent in self.membership.newly_lost(time.monotonic(), within):
            log.error(
                "topology: worker %r is lost (no answer to heartbeats for %.1f s); it is "
                "fenced until it answers again or restarts with the same command",
                name,
                silent,
            )
            if recover:
                self.begin_recovery(f"worker {name!r} was lost")

    def on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        if not self.membership.answer(msg.worker, msg.uid, time.monotonic()):
            return
        # It never died: it was stopped or cut off. Its actors (of an old epoch) are
        # retired with the others' and it takes its place again in a new placement.
        why = f"worker {msg.worker!r} answers again after it was lost"
        log.warning("topology: %s; fencing its old actors", why)
        guard = self.membership.members[msg.worker].guard
        if guard is not None:
            self.send(guard, Fenced(self.epoch + 1, why))
        if self.state in PLACED:
            self.begin_recovery(why)

    def on_owner_unreachable(self, msg: OwnerUnreachable) -> None:
        """A router drops records for a worker it lost: only a rollback replays them."""
        if self.state != Phase.RUNNING or msg.worker in self.membership.lost:
            return  # a recovery is under way already, or the loss is known
        if self.membership.silent_for(msg.worker, time.monotonic()) > 2 * HEARTBEAT_EVERY:
            return  # heartbeats will find it lost and recover
        self.begin_recovery(
            f"{msg.stage_id}@{msg.reporter} dropped records for worker {msg.worker!r}, "
            "which answers again"
        )

    def begin_recovery(self, why: str) -> None:
        """Stop checkpoints; re-place everything once every worker is back."""
        r = self.rescale
        gone = self.membership.lost | self.membership.dead
        if r is not None and r.step != Step.CUT and any(w in gone for w in r.joining):
            self.abandon_rescale(f"{why} while it joined")
        elif r is not None and r.step == Step.CUT:
            r.hold_at = 0  # the recovery's placement does not hold: cut again after it
        if self.state != "recovering":
            self.recoveries += 1
        if self.state in ("running", "starting", "configuring"):
            self.old.update(self.addresses)
            self.addresses = {}
        self.checkpoints.cancel()
        self.state = Phase.RECOVERING
        log.warning(
            "topology: recovery: %s; rolling back to checkpoint %d", why, self.checkpoints.completed
        )
        self.maybe_place()

    # ---- shutting down ------------------------------------------------------

    def on_shutdown(self, sender: Any) -> None:
        if self.request is None:
            self.send(sender, ShutdownDone(0, (), "not the initializer's control address"))
            return
        self.shutdown_waiters.append(sender)
        if self.state == "running":
            if self.checkpoints.pending is None:
                self.start_checkpoint()
            if self.checkpoints.pending is None:  # nothing to checkpoint (no sources)
                self.finish_shutdown()
        else:
            self.finish_shutdown(
                f"the cluster is {self.state}; files are from checkpoint "
                f"{self.checkpoints.completed}"
            )

    def finish_shutdown(self, error: str | None = None) -> None:
        names = tuple(self.membership.order)
        done = ShutdownDone(self.checkpoints.completed, names, error)
        for waiter in self.shutdown_waiters:
            self.send(waiter, done)
        self.shutdown_waiters = []
        self.state = Phase.STOPPING
        log.info("topology: shutting down the cluster at checkpoint %d", self.checkpoints.completed)
        for name in self.membership.order:
            guard = self.membership.members[name].guard
            if guard is not None:
                self.send(guard, StopWorker())
