"""The connector sink: outputs committed with the checkpoints that cover them.

It is the "sink" actor of every app: with a plain ``TCPSinkConfig`` it is the TCP sink
of :mod:`actorflow.runtime.sink` unchanged. With a ``SinkConnectorConfig`` it runs a
two-phase commit against the connector script (:mod:`actorflow.connectors.protocol`):

- phase one, at a checkpoint's barrier: the outputs since the previous barrier close
  into that checkpoint's *interval*, written with every interval the connector has not
  confirmed into this sink's checkpoint file, before the sink reports the barrier;
- phase two, once the checkpoint has completed: its intervals go to the connector,
  which commits each with its own log entry and confirms it.

A sink restored from checkpoint R resends the intervals R holds; the connector skips
those its log already has. So what the connector commits is exactly what completed
checkpoints cover, once each, across crashes, rollbacks and restarts. The sink's name
in the connector's log carries a lineage token kept in its checkpoint files, so a new
cluster of the same app (after ``actorflow clean``) does not inherit the old one's log.
Held intervals are bounded by ``--sink-buffer``: past it, the sink holds back its acknowledgements
and the pipeline slows down.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from actorflow.connectors import protocol as p
from actorflow.experimental import SinkConnectorConfig
from actorflow.messages import Ack, CheckpointReached, EncodedBatch
from actorflow.resilience import read_snapshot, write_snapshot
from actorflow.runtime.sink import SinkActor

log = logging.getLogger("actorflow.sink")


class ConnectorSinkActor(SinkActor):
    """Runs one sink; two-phase commit when the app declares a sink connector."""

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        st = self.config.stage.stage
        cfg = self.app.stage(st.app_stages[0]).spec[st.sink_index]
        self.connector = isinstance(cfg, SinkConnectorConfig)
        self.cookie = getattr(cfg, "cookie", "")
        self.sink_id = f"{self.app.name}/{st.id}@{self.config.worker}"
        self.current = bytearray()  # outputs since the last barrier
        self.current_count = 0
        self.intervals: dict[int, list] = {}  # checkpoint -> [outputs, count, sent]
        self.ready_upto = 0  # intervals up to here are covered by completed checkpoints
        self.told = False  # CheckpointDone reaches this sink (else: barrier N+1 implies N)
        self.hello_ok = False
        self.splitter = p.FrameSplitter(1 << 20)
        self.committed_records = 0
        self.committed_checkpoint = 0
        # The sink's lineage: fresh for a new cluster, kept in its checkpoint files, so
        # the connector's log tells apart the outputs of clusters that reuse a name.
        self.lineage = secrets.token_hex(6)
        files, restore = self.config.files, self.config.restore
        path = files.snapshot(st.id, restore) if files is not None and restore else None
        if self.connector and path is not None and os.path.exists(path):
            snapshot = read_snapshot(path)
            self.lineage = snapshot["lineage"]
            for checkpoint, (data, count) in snapshot["intervals"].items():
                self.intervals[checkpoint] = [data, count, False]
            self.ready_upto = restore
            log.info(
                "sink %s: restored %d uncommitted intervals of checkpoint %d",
                self.sink_id,
                len(self.intervals),
                restore,
            )
        elif self.connector and path is not None:  # a worker new to the cluster
            log.info("sink %s: no files of checkpoint %d; a new lineage", self.sink_id, restore)
        self.sink_id += f"/{self.lineage}"
        super().setup()

    # ---- the connection ----------------------------------------------------------

    def connected(self, sock: Any) -> None:
        if self.connector:
            self.hello_ok = False
            self.splitter = p.FrameSplitter(1 << 20)
            self.out = bytearray(
                p.control(p.SINK_HELLO, {"cookie": self.cookie, "sink": self.sink_id})
            )
            for interval in self.intervals.values():
                interval[2] = False
        super().connected(sock)

    def on_watch(self, ready: list[int]) -> None:
        if not self.connector:
            super().on_watch(ready)
            return
        data = self.receive(ready, 65536, "connector")
        if not data:
            return
        try:
            for kind, body in self.splitter.feed(data):
                self._answer(kind, p.parse_control(body))
        except p.ProtocolError as exc:
            self.disconnect(f"protocol error: {exc}")

    def _answer(self, kind: int, msg: dict) -> None:
        if kind == p.SINK_OK:
            self.hello_ok = True
            self._confirmed(int(msg.get("committed", 0)))
            self._send_ready()
        elif kind == p.COMMITTED:
            self._confirmed(int(msg.get("checkpoint", 0)))
        elif kind == p.ERROR:
            log.error("sink %s: the connector refused: %s", self.sink_id, msg.get("message"))
            self.disconnect("refused")
        else:
            raise p.ProtocolError(f"unexpected frame type {kind}")

    def _confirmed(self, checkpoint: int) -> None:
        for c in [c for c in self.intervals if c <= checkpoint]:
            self.committed_records += self.intervals.pop(c)[1]
        self.committed_checkpoint = max(self.committed_checkpoint, checkpoint)
        self.release()

    def _send_ready(self) -> None:
        if not self.hello_ok:
            return
        for checkpoint in sorted(self.intervals):
            interval = self.intervals[checkpoint]
            if checkpoint <= self.ready_upto and not interval[2]:
                interval[2] = True
                self.out += p.commit(checkpoint, bytes(interval[0]))
        self.flush()

    # ---- outputs and checkpoints -----------------------------------------------------

    def held_bytes(self) -> int:
        return len(self.current) + sum(len(i[0]) for i in self.intervals.values())

    def on_encoded(self, link: tuple[str, int], msg: EncodedBatch, sender: Any) -> None:
        if not self.connector:
            super().on_encoded(link, msg, sender)
            return
        self.batches_in += 1
        self.records_in += msg.count
        self.current += msg.data
        self.current_count += msg.count
        self.ack_later(link, sender, Ack(msg.link, msg.seq, msg.epoch))

    def holding_acks(self) -> bool:
        if getattr(self, "connector", False):
            return self.held_bytes() > self.limit
        return super().holding_acks()

    def checkpoint(self, checkpoint: int) -> None:
        """Phase one: the interval this barrier closes, durable with the unconfirmed ones."""
        super().checkpoint(checkpoint)
        if not self.connector:
            return
        assert self.config is not None
        if self.current_count:
            self.intervals[checkpoint] = [bytes(self.current), self.current_count, False]
        self.current = bytearray()
        self.current_count = 0
        if self.config.files is not None:
            intervals = {c: (bytes(i[0]), i[1]) for c, i in self.intervals.items()}
            snapshot = {"lineage": self.lineage, "intervals": intervals}
            write_snapshot(self.config.files.snapshot(self.stage_id, checkpoint), snapshot)

    def after_barrier(self, checkpoint: int) -> None:
        if not self.connector:
            super().after_barrier(checkpoint)
            return
        assert self.config is not None
        if self.config.coordinator is not None:
            self.send(
                self.config.coordinator,
                CheckpointReached(checkpoint, self.epoch, self.stage_id, self.config.worker),
            )
        if not self.told:
            # Without CheckpointDone, barrier N comes only once N-1 completed or was
            # abandoned; the next completed checkpoint would cover an abandoned one's
            # outputs anyway, unless a rollback comes first (see the module's notes).
            self._ready(checkpoint - 1)
            if self.config.files is not None:  # keep a few: the restore target is among them
                self.config.files.forget_before(self.stage_id, checkpoint - 3)

    def on_checkpoint_done(self, checkpoint: int) -> None:
        super().on_checkpoint_done(checkpoint)
        if not self.connector:
            return
        self.told = True
        self._ready(checkpoint)
        if self.config is not None and self.config.files is not None:
            self.config.files.forget_before(self.stage_id, checkpoint)

    def _ready(self, checkpoint: int) -> None:
        """Phase two for every interval up to ``checkpoint``."""
        if checkpoint > self.ready_upto:
            self.ready_upto = checkpoint
        self._send_ready()

    def counters(self) -> dict:
        c = super().counters()
        if getattr(self, "connector", False):
            c.update(
                records_out=self.committed_records,
                committed_checkpoint=self.committed_checkpoint,
                bytes_held=self.held_bytes(),
                intervals_held=len(self.intervals),
            )
        return c
