"""The base of every placed actor: configuration, batches in, acknowledgements,
checkpoint barriers, retirement and status.

A stage acknowledges an input batch once it has handled it, unless one of its
outlets holds a whole batch it may not send yet; then the acknowledgement waits
until the outlet drains. Acknowledgements are cumulative: a link's batches handled
in one pass of the actor's loop get one, sent once the pass is over. Upstream
windows are small, so every buffer on the way is bounded and a slow sink slows the
source down.

Checkpoints follow Chandy-Lamport with aligned barriers: when a barrier arrives
on an input link, that link is held (its batches wait, unacknowledged) until the
barrier has come on every input link; then the stage snapshots (``checkpoint``),
sends the barrier on every outlet, and takes up the held batches.

In an app with windows, a stage's watermark is the minimum over its live input
links (``runtime/watermarks.py``); it passes it on with its own batches, after
``on_watermark`` (window steps fire there).
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from datetime import timedelta
from typing import Any

from thespian.actors import (
    Actor,
    ActorExitRequest,
    PoisonMessage,
    ThespianWatch,
    WakeupMessage,
    WatchMessage,
)

from actorflow.api import Application, is_timed
from actorflow.loader import app_codec, load_application
from actorflow.messages import (
    Ack,
    Barrier,
    Batch,
    CheckpointDone,
    CheckpointFailed,
    Configure,
    Configured,
    EncodedBatch,
    Liveness,
    OwnerUnreachable,
    Retire,
    Retired,
    StageReport,
    StageStatus,
    StatusQuery,
)
from actorflow.metrics.report import Histogram
from actorflow.runtime.collector import tune_collector
from actorflow.runtime.outlets import Outlet, build_routes
from actorflow.runtime.steps import ErrorLog
from actorflow.runtime.watermarks import InputWatermarks, StageWatermark
from actorflow.transport import refused

WORKER_CAPABILITY = "actorflow.worker"  # the worker's name, for people
WORKER_UID_CAPABILITY = "actorflow.worker_uid"  # this incarnation of the worker, for placement

log = logging.getLogger("actorflow.stage")

_DATA = (Batch, EncodedBatch, Barrier)
METRICS_EVERY = timedelta(seconds=1)
OWNER_CHECK_EVERY = timedelta(seconds=1)
WATERMARK_CHECK_EVERY = timedelta(seconds=1)  # notice input links that went silent
OWNER_STUCK = 2.0  # seconds without an acknowledgement before the owner is looked at
COORDINATOR_SILENT = 5.0  # seconds without Liveness: cut off from the topology actor


def owner_gone(worker: str, lost: frozenset[str], heard_at: float, now: float) -> bool:
    """Whether a stage stops waiting for ``worker``, whose link is stuck: the cluster
    holds it lost, or this stage has not heard from the topology actor for a while
    (the initializer is down, or this worker is cut off), so nobody will tell.

    A stuck link alone is not enough: a slow receiver stalls live links too.

    >>> owner_gone("w2", frozenset({"w2"}), heard_at=10.0, now=11.0)
    True
    >>> owner_gone("w2", frozenset(), heard_at=10.0, now=11.0)
    False
    >>> owner_gone("w2", frozenset(), heard_at=10.0, now=10.0 + COORDINATOR_SILENT + 1)
    True
    """
    return worker in lost or now - heard_at > COORDINATOR_SILENT


class PlacedActor(Actor):
    """An actor that may only be created on the worker named in its requirements."""

    @staticmethod
    def actorSystemCapabilityCheck(capabilities: dict, requirements: dict) -> bool:  # noqa: N802
        wanted = (requirements or {}).get("worker_uid")
        return wanted is None or capabilities.get(WORKER_UID_CAPABILITY) == wanted


class StageActor(PlacedActor):
    """Common behaviour of sources, chains, routers, state steps and sinks."""

    kind = "stage"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: Configure | None = None
        self.app: Application | None = None
        self.epoch = 0
        self.routes: list = []
        self.outlets: dict[int, Outlet] = {}
        self.acks_due: dict[tuple[str, int], tuple[Any, Ack]] = {}  # per link, the newest
        self.acks_pending = False  # a wakeup will send acks_due
        self.records_in = 0
        self.batches_in = 0
        self.error_logs: list[ErrorLog] = []
        self.watch: list[int] = []
        self.expected: dict[tuple[str, int], int] = {}  # next seq per incoming link
        self.early: dict[tuple[str, int], dict[int, Any]] = {}  # batches that overtook others
        self.reordered = 0
        self.stale_dropped = 0
        self.internal_errors = 0
        # checkpoint alignment
        self.held: dict[tuple[str, int], deque] = {}  # links that delivered the barrier
        self.checkpoints = 0
        self.retired = False
        self.latency: Histogram | None = None  # per batch, this interval (with --metrics)
        self.lost_workers: frozenset[str] = frozenset()  # from the topology's Liveness
        self.liveness_at = time.monotonic()
        self.timed = False  # the app has windows: records carry event times
        self.deserialize: Any = None  # the app's own, when it defines serialize too
        self.serialize: Any = None
        self.input_watermarks = InputWatermarks(0, time.monotonic())
        self.watermark = StageWatermark()

    # ---- dispatch ---------------------------------------------------------

    def receiveMessage(self, msg: Any, sender: Any) -> Any:  # noqa: N802
        try:
            cls = msg.__class__
            if cls in _DATA:
                if msg.epoch != self.epoch or self.retired:
                    self.stale_dropped += 1  # from an older placement: fenced off
                else:
                    link = (str(sender), msg.link)
                    for m in self.in_order(link, msg):
                        self.take(link, m, sender)
            elif cls is Ack:
                self.on_ack(msg)
            elif cls is WatchMessage:
                self.on_watch(msg.ready)
            elif cls is WakeupMessage:
                if msg.payload == "acks":
                    self.acks_pending = False
                    if not self.holding_acks():
                        self.send_acks()
                elif msg.payload == "metrics":
                    self.report_metrics()
                elif msg.payload == "owners":
                    self.check_owners()
                elif msg.payload == "watermarks":
                    if not self.retired:
                        self.watermark_moved()
                        self.wakeupAfter(WATERMARK_CHECK_EVERY, "watermarks")
                else:
                    self.on_wakeup(msg.payload)
            elif cls is Liveness:
                self.lost_workers = frozenset(msg.lost)
                self.liveness_at = time.monotonic()
            elif cls is Configure:
                self.liveness_at = time.monotonic()
                kept = msg.keep and self.config is not None and not self.retired
                reply = self.reconfigure(msg) if kept else self.configure(msg)
                if reply is not None:  # a state actor may answer once its partitions arrive
                    self.send(sender, reply)
            elif cls is StatusQuery:
                self.send(sender, self.status())
            elif cls is CheckpointDone:
                if msg.epoch == self.epoch:
                    self.on_checkpoint_done(msg.checkpoint)
            elif cls is Retire:
                self.retire(sender, msg)
            elif isinstance(msg, ActorExitRequest):
                self.on_exit()
                return None
            elif isinstance(msg, PoisonMessage):
                log.warning(
                    "%s: a message could not be delivered: %r", self.name, msg.poisonMessage
                )
            else:
                self.on_other(msg, sender)
        except Exception:
            log.error(
                "%s: internal error on %s:\n%s",
                self.name,
                type(msg).__name__,
                traceback.format_exc(),
            )
        return ThespianWatch(self.watch) if self.watch else None

    # ---- configuration ----------------------------------------------------

    @property
    def name(self) -> str:
        if self.config is None:
            return f"{self.kind} (not configured)"
        return f"{self.config.stage.stage.id}@{self.config.worker}"

    @property
    def stage_id(self) -> str:
        return self.config.stage.stage.id if self.config else "?"

    def configure(self, cfg: Configure) -> Configured | None:
        stage_id = cfg.stage.stage.id
        try:
            self.config = cfg
            self.epoch = cfg.epoch
            self.app = load_application(cfg.app_path, cfg.app_args)
            self.timed = is_timed(self.app)
            codec = app_codec(cfg.app_path)
            serialize, self.deserialize = codec if codec else (None, None)
            self.input_watermarks = InputWatermarks(cfg.inputs, time.monotonic())
            self.serialize = serialize
            self.wire_routes(cfg)
            self.setup()
            tune_collector()
            if self.timed and cfg.inputs and self.kind != "sink":
                self.wakeupAfter(WATERMARK_CHECK_EVERY, "watermarks")
            if cfg.metrics is not None:
                self.latency = Histogram()
                self.wakeupAfter(METRICS_EVERY, "metrics")
            if any(o.worker and o.worker != cfg.worker for o in self.outlets.values()):
                self.wakeupAfter(OWNER_CHECK_EVERY, "owners")
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            log.error("%s: configuration failed: %s", stage_id, traceback.format_exc())
            return Configured(stage_id, cfg.worker, detail, cfg.epoch)
        return Configured(stage_id, cfg.worker, epoch=cfg.epoch)

    def wire_routes(self, cfg: Configure) -> None:
        """This placement's outlets, from its routes."""
        s = cfg.settings
        router_errors = ErrorLog(f"{cfg.stage.stage.name} (partition routing)", s.error_log_limit)
        self.routes, self.outlets = build_routes(
            cfg.routes,
            self.send,
            s.window,
            s.batch_size,
            self._encoder_for,
            router_errors,
            cfg.epoch,
            self.timed,
            self.serialize,
        )
        self.error_logs.append(router_errors)

    def reconfigure(self, cfg: Configure) -> Configured:
        """Kept through a grow or shrink (a source of a staying worker): take the new
        placement's epoch and routes, keep sockets, offsets and timers."""
        try:
            self.config, self.epoch = cfg, cfg.epoch
            self.wire_routes(cfg)
            self.on_reconfigured(cfg)
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            log.error("%s: reconfiguration failed: %s", self.name, traceback.format_exc())
            return Configured(cfg.stage.stage.id, cfg.worker, detail, cfg.epoch)
        return Configured(cfg.stage.stage.id, cfg.worker, epoch=cfg.epoch)

    def on_reconfigured(self, cfg: Configure) -> None:
        """Subclasses take what else a kept actor's new Configure says."""

    def _encoder_for(self, sink: tuple[int, int]) -> tuple[Any, ErrorLog]:
        assert self.app is not None and self.config is not None
        stage_id, index = sink
        cfg = self.app.stage(stage_id).spec[index]
        errors = ErrorLog(f"encoder of {cfg.name}", self.config.settings.error_log_limit)
        self.error_logs.append(errors)
        return cfg.encoder.func, errors

    def setup(self) -> None:
        """Subclasses prepare their user functions (and restore checkpoints) here."""

    # ---- data path --------------------------------------------------------

    def in_order(self, link: tuple[str, int], msg: Any) -> list:
        """The messages of ``link`` that can be handled now, in sequence order.

        Thespian may deliver the batches in flight on a link out of order (a
        retried transmit overtakes); per-key order needs them in order. At most
        a window's worth waits here.
        """
        expected = self.expected.get(link, 1)
        if msg.seq != expected:
            if msg.seq > expected:
                self.early.setdefault(link, {})[msg.seq] = msg
                self.reordered += 1
            else:
                log.error("%s: batch %d on link %s came twice; dropped", self.name, msg.seq, link)
            return []
        ready = [msg]
        expected += 1
        early = self.early.get(link)
        while early and expected in early:
            ready.append(early.pop(expected))
            expected += 1
        self.expected[link] = expected
        return ready

    def take(self, link: tuple[str, int], msg: Any, sender: Any) -> None:
        """Handle one in-order message of a link, or hold it while aligning a barrier."""
        held = self.held.get(link)
        if held is not None:
            held.append((msg, sender))
            return
        if msg.__class__ is Barrier:
            self.ack_later(link, sender, Ack(msg.link, msg.seq, msg.epoch))
            self.on_barrier(link, msg.checkpoint)
        elif msg.__class__ is Batch:
            self.on_batch(link, msg, sender)
        else:
            self.on_encoded(link, msg, sender)

    def on_barrier(self, link: tuple[str, int], checkpoint: int) -> None:
        assert self.config is not None
        self.held[link] = deque()
        if len(self.held) < self.config.inputs:
            return
        # The barrier came on every input: everything before it is in our state.
        try:
            self.checkpoint(checkpoint)
            self.checkpoints += 1
        except Exception as exc:  # the checkpoint fails; processing goes on
            why = f"{type(exc).__name__}: {exc}"
            log.error("%s: cannot write checkpoint %d: %s", self.name, checkpoint, why)
            if self.config.coordinator is not None:
                self.send(
                    self.config.coordinator,
                    CheckpointFailed(
                        checkpoint,
                        self.epoch,
                        self.stage_id,
                        self.config.worker,
                        f"{self.name}: {why}",
                    ),
                )
        for o in self.outlets.values():
            o.barrier(checkpoint)
        self.after_barrier(checkpoint)
        held, self.held = self.held, {}
        for hlink, queue in held.items():
            while queue:
                msg, sender = queue.popleft()
                self.take(hlink, msg, sender)

    def checkpoint(self, checkpoint: int) -> None:
        """Subclasses with state write it for ``checkpoint`` here (durably)."""

    def after_barrier(self, checkpoint: int) -> None:
        """Sinks report the barrier here."""

    def on_checkpoint_done(self, checkpoint: int) -> None:
        """Checkpoint ``checkpoint`` is complete everywhere: older files may go."""

    def emit(self, records: list, born: float = 0.0, lane: int = 0) -> None:
        """Hand records to every route and send what the windows allow (``lane``: a
        source's connection, for a route to the next stage's lanes)."""
        if records:
            for r in self.routes:
                r.emit(records, lane)
        for o in self.outlets.values():
            if o.buf:
                if born and (not o.born or born < o.born):
                    o.born = born
                o.pump()

    def backlogged(self) -> bool:
        for o in self.outlets.values():
            if o.backlog >= o.batch_size:
                return True
        return False

    def on_batch(self, link: tuple[str, int], msg: Batch, sender: Any) -> None:
        records = msg.records
        started = time.monotonic()
        try:
            if records:
                self.batches_in += 1
                self.records_in += len(records)
                if self.deserialize is not None:
                    records = self.decoded(records)
                out = self.process(records)
                self.processed(records, time.monotonic() - started)
                self.emit(out, msg.born)
            if self.timed:
                self.input_watermarks.heard(link, msg.watermark, started)
                self.watermark_moved()
        except Exception:  # a bug of ours: log it, and keep the link's credit
            self.internal_errors += 1
            log.error(
                "%s: batch %d dropped by an internal error:\n%s",
                self.name,
                msg.seq,
                traceback.format_exc(),
            )
        self.ack_later(link, sender, Ack(msg.link, msg.seq, msg.epoch))

    def ack_later(self, link: tuple[str, int], sender: Any, ack: Ack) -> None:
        """Acknowledge ``ack``'s batch, and every earlier one of its link, once this pass
        over the incoming messages is over and no outlet is backlogged."""
        self.acks_due[link] = (sender, ack)
        if not self.acks_pending:
            self.acks_pending = True
            self.wakeupAfter(timedelta(0), "acks")

    def holding_acks(self) -> bool:
        """Whether acknowledgements wait (an outlet holds a whole batch; a sink: its
        buffer is over its limit). A barrier's acknowledges the batches before it too,
        so it waits as theirs do."""
        return self.backlogged()

    def send_acks(self) -> None:
        due, self.acks_due = self.acks_due, {}
        for sender, ack in due.values():
            self.send(sender, ack)

    def process(self, records: list) -> list:
        """Subclasses turn input records into output records."""
        return records

    def decoded(self, records: list) -> list:
        """Record values as the app's ``deserialize`` makes them from their bytes."""
        deser = self.deserialize
        try:
            return [(r[0], deser(r[1]), *r[2:]) for r in records]
        except Exception:
            out = []
            for r in records:
                try:
                    out.append((r[0], deser(r[1]), *r[2:]))
                except Exception as exc:
                    self.error_logs[0].report(exc, r[0], r[1])
            return out

    def watermark_moved(self) -> None:
        """Take the inputs' watermark: fire what it closes, pass it on."""
        wm = self.watermark
        if wm.update(self.input_watermarks.current(time.monotonic())):
            self.emit(self.on_watermark(wm.value))
        self.pass_watermark(self.output_watermark())

    def on_watermark(self, watermark: int) -> list:
        """Window steps fire the windows that ``watermark`` closes here."""
        return []

    def output_watermark(self) -> int | None:
        """The watermark this stage's batches carry (a window step's is its closed time)."""
        return self.watermark.out

    def pass_watermark(self, watermark: int | None) -> None:
        for o in self.outlets.values():
            if o.timed and o.latest != watermark:
                o.set_watermark(watermark)
                o.pump()

    def processed(self, records: list, seconds: float) -> None:
        """Record how long a batch took in this step (with --metrics)."""
        if self.latency is not None:
            self.latency.record(seconds)

    def check_owners(self) -> None:
        """A link to another worker that has had no acknowledgement for a while: if that
        worker is gone, stop waiting for it, so the keys of live workers keep flowing.
        What its keys get meanwhile is dropped and counted; the rollback that its
        restart brings replays it."""
        if self.retired or self.config is None:
            return
        now = time.monotonic()
        for o in self.outlets.values():
            if o.dead or not o.worker or o.worker == self.config.worker or not o.in_flight:
                continue
            if now - o.last_ack < OWNER_STUCK:
                continue
            if owner_gone(o.worker, self.lost_workers, self.liveness_at, now):
                o.give_up()
                log.warning(
                    "%s: worker %s does not answer; its keys' records are dropped until the "
                    "cluster rolls back (the others go on)",
                    self.name,
                    o.worker,
                )
                if self.config.coordinator is not None:
                    self.send(
                        self.config.coordinator,
                        OwnerUnreachable(o.worker, self.stage_id, self.config.worker),
                    )
        if not self.backlogged():
            self.release()
        self.wakeupAfter(OWNER_CHECK_EVERY, "owners")

    def report_metrics(self) -> None:
        """Send this interval's figures to the worker's reporter."""
        if self.retired or self.config is None or self.config.metrics is None:
            return
        st = self.config.stage.stage
        step = {
            "id": st.id,
            "name": st.name,
            "kind": st.kind,
            "pipeline": self.app.name if self.app else "",
            **{k: v for k, v in self.counters().items() if isinstance(v, int | float)},
            "latency": self.latency.take().to_wire() if self.latency else {"counts": []},
        }
        self.send(self.config.metrics, StageReport(st.id, step, self.pipeline_latency()))
        self.wakeupAfter(METRICS_EVERY, "metrics")

    def pipeline_latency(self) -> dict | None:
        """Sinks: source-to-sink latency of this interval, in wire form."""
        return None

    def on_ack(self, msg: Ack) -> None:
        o = self.outlets.get(msg.link) if msg.epoch == self.epoch else None
        if o is not None:
            o.acked(msg.seq)
        if not self.backlogged():
            self.release()

    def release(self) -> None:
        """Send the acknowledgements held back while backlogged."""
        if self.acks_due and not self.acks_pending and not self.holding_acks():
            self.send_acks()

    def on_encoded(self, link: tuple[str, int], msg: EncodedBatch, sender: Any) -> None:
        log.error("%s: got encoded output, but only sinks take it", self.name)

    def on_watch(self, ready: list[int]) -> None:
        pass

    def on_wakeup(self, payload: Any) -> None:
        pass

    def on_other(self, msg: Any, sender: Any) -> None:
        log.warning("%s: unexpected message %r", self.name, msg)

    # ---- end of life ------------------------------------------------------

    def retire(self, sender: Any, msg: Retire | None = None) -> None:
        """A newer placement replaces this actor: stop, close sockets, answer, exit."""
        self.retired = True
        self.on_exit()
        self.watch = []
        self.send(
            sender,
            Retired(
                self.stage_id,
                self.config.worker if self.config else "?",
                self.unreplayable(),
                sum(o.dropped for o in self.outlets.values()),
            ),
        )
        self.send(self.myAddress, ActorExitRequest())

    def unreplayable(self) -> int:
        return 0

    def on_exit(self) -> None:
        pass

    # ---- status -----------------------------------------------------------

    def counters(self) -> dict:
        return {
            "records_in": self.records_in,
            "batches_in": self.batches_in,
            "records_out": sum(o.sent_records for o in self.outlets.values()),
            "batches_out": sum(o.sent_batches for o in self.outlets.values()),
            "errors": sum(e.count for e in self.error_logs),
            "buffered": sum(o.backlog for o in self.outlets.values()),
            "held_acks": 0 if self.acks_pending else len(self.acks_due),
            "reordered": self.reordered,
            "stale_dropped": self.stale_dropped,
            "dropped_for_lost_owners": sum(o.dropped for o in self.outlets.values()),
            "internal_errors": self.internal_errors,
            "messages_refused": sum(refused().values()),
            "checkpoints": self.checkpoints,
            "epoch": self.epoch,
            **({"watermark": self.watermark.value} if self.timed and self.kind != "sink" else {}),
        }

    def status(self) -> StageStatus:
        worker = self.config.worker if self.config else "?"
        return StageStatus(self.stage_id, worker, self.kind, self.counters())
