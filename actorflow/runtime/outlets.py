"""Outgoing links with flow control, and the routes built on them.

An :class:`Outlet` is one link to one downstream actor. It batches records up
to ``batch_size`` and allows at most ``window`` unacknowledged batches, and at
most ``window * batch_size`` records in flight. A partial batch goes out at once
when nothing is in flight (low latency when idle: no batch ever waits for a
timer) and otherwise waits for the next acknowledgement or a full batch. A busy
link (something in flight) cuts larger batches, up to ``BUSY_BATCH_FACTOR``
batches' worth within the records allowed in flight: fewer messages, and fewer
acknowledgements, under load. What cannot be sent stays in the outlet's buffer; the
owning actor stops taking input while any buffer holds a full batch, which
is how back-pressure reaches the source. Checkpoint barriers go through the same
window, in order with the batches.

In an app with windows (``timed``), every batch carries the sending stage's
watermark, and a link with nothing to send and nothing in flight sends an empty
batch when the watermark has moved (see ``runtime/watermarks.py``). An app that
defines ``serialize``/``deserialize`` has each record's value sent as their bytes.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actorflow.messages import Barrier, Batch, EncodedBatch, Route
from actorflow.partitioning import partition_of
from actorflow.runtime.steps import ErrorLog

Send = Callable[[Any, Any], None]

_KEY_CACHE_LIMIT = 1 << 16
# A busy link (a batch in flight, a full batch waiting) cuts batches of up to this many
# times batch_size, while the records in flight stay within window * batch_size: fewer,
# larger messages under load, the same bound on what is buffered.
BUSY_BATCH_FACTOR = int(os.environ.get("ACTORFLOW_BUSY_BATCH_FACTOR", "2"))
# Optionally (ACTORFLOW_LINK_MS, off by default) also within what the target took in that
# many milliseconds by its acknowledgements, never under two batches: records in flight
# bounded in time. At 25 ms it cost half the saturated throughput on a loaded 2-core
# machine, and saturated latency there sits mostly in the source's socket buffers.
LINK_SECONDS = float(os.environ.get("ACTORFLOW_LINK_MS", "0")) / 1000
_RATE_WEIGHT = 0.2  # of each acknowledgement in the link's rate estimate


class Outlet:
    """One flow-controlled link to one downstream actor.

    ``buf`` collects records (or encoded outputs) not yet in a batch; ``sealed`` holds
    batches and barriers cut from it that wait for the window, in link order.
    """

    def __init__(
        self,
        send: Send,
        target: Any,
        link: int,
        window: int,
        batch_size: int,
        encoded: bool,
        epoch: int = 0,
    ) -> None:
        self.send = send
        self.target = target
        self.link = link
        self.window = window
        self.batch_size = batch_size
        self.encoded = encoded
        self.epoch = epoch
        self.buf: list = []
        self.born = 0.0  # when the oldest record in buf entered the cluster
        self.sealed: deque = deque()
        self.sealed_records = 0
        self.worker = ""  # the target's worker, for partitioned links
        self.last_ack = 0.0  # monotonic time of the last acknowledgement (or first send)
        self.dead = False  # the target's worker is gone: records are dropped until rollback
        self.dropped = 0
        self.in_flight = 0
        self.in_flight_records = 0  # records in the messages in flight
        self.flight: deque = deque()  # (seq, records) per message in flight, oldest first
        self.busy_cut = batch_size * max(1, BUSY_BATCH_FACTOR)
        self.budget = batch_size * window  # records in flight at most, on a busy link
        self.max_budget = self.budget
        self.min_budget = min(self.budget, 2 * batch_size)
        self.rate = 0.0  # records per second the target acknowledges, smoothed
        self.seq = 0
        self.sent_records = 0
        self.sent_batches = 0
        self.timed = False  # send watermark-only batches when the watermark moves
        self.watermark: int | None = None  # holds after every record cut from buf so far
        self.latest: int | None = None  # the sending stage's newest watermark
        self.marks: deque = deque()  # (position in the link's records, watermark) to come
        self.cut_total = 0  # records cut from buf so far
        self.sent_watermark: int | None = None
        self.serialize: Callable[[Any], bytes] | None = None  # the app's own, if any
        self.codec_errors: ErrorLog | None = None

    @property
    def backlog(self) -> int:
        """Records waiting for credit (none for a dead target: they are dropped)."""
        return len(self.buf) + self.sealed_records

    def set_watermark(self, watermark: int | None) -> None:
        """The sending stage's watermark is now ``watermark``: it holds after the records
        buffered so far, so a batch cut before them all carries an older one."""
        if watermark == self.latest:
            return
        self.latest = watermark
        if not self.buf:
            self.watermark = watermark
            self.marks.clear()
            return
        at = self.cut_total + len(self.buf)
        if self.marks and self.marks[-1][0] == at:
            self.marks[-1] = (at, watermark)
        else:
            self.marks.append((at, watermark))

    def give_up(self) -> None:
        """The target's worker is gone: drop what waits for it, and all that comes, until
        the rollback that its restart brings replays them (they are counted)."""
        self.dead = True
        self.dropped += len(self.buf) + self.sealed_records
        self.marks.clear()
        self.watermark = self.latest
        self.buf.clear()
        self.sealed.clear()
        self.sealed_records = 0

    def _cut(self, size: int = 0) -> Any:
        """The next batch (``size`` records at most; default batch_size) from the front
        of buf, with the next sequence number."""
        buf = self.buf
        size = size or self.batch_size
        chunk = buf[:size]
        del buf[:size]
        self.seq += 1
        self.cut_total += len(chunk)
        marks = self.marks
        while marks and marks[0][0] <= self.cut_total:  # the watermarks these records reach
            self.watermark = marks.popleft()[1]
        born = self.born
        if not buf:
            self.born = 0.0
        if self.encoded:
            return EncodedBatch(self.link, self.seq, b"".join(chunk), len(chunk), self.epoch, born)
        if self.serialize is not None:
            chunk = self._serialized(chunk)
        return Batch(self.link, self.seq, chunk, self.epoch, born, self.watermark)

    def _serialized(self, chunk: list) -> list:
        """Each record's value as the app's ``serialize`` makes it (failures skipped)."""
        ser = self.serialize
        assert ser is not None
        try:
            return [(r[0], ser(r[1]), *r[2:]) for r in chunk]
        except Exception:
            out = []
            for r in chunk:
                try:
                    out.append((r[0], ser(r[1]), *r[2:]))
                except Exception as exc:
                    if self.codec_errors is not None:
                        self.codec_errors.report(exc, r[0], r[1])
            return out

    def _transmit(self, msg: Any) -> None:
        self.in_flight += 1
        cls = msg.__class__
        count = 0
        if cls is Batch:
            self.sent_watermark = msg.watermark
            if msg.records:
                count = len(msg.records)
                self.sent_records += count
                self.sent_batches += 1
        elif cls is EncodedBatch:
            count = msg.count
            self.sent_records += count
            self.sent_batches += 1
        self.flight.append((msg.seq, count))
        self.in_flight_records += count
        self.send(self.target, msg)

    def pump(self) -> None:
        """Send what the window allows: sealed messages first, then batches from buf."""
        if self.dead:
            self.dropped += len(self.buf)
            self.buf.clear()
            self.marks.clear()
            self.watermark = self.latest
            return
        if self.in_flight == 0:
            self.last_ack = time.monotonic()
        while self.in_flight < self.window:
            if self.sealed:
                msg = self.sealed[0]
                count = 0
                if msg.__class__ is not Barrier:
                    count = msg.count if self.encoded else len(msg.records)
                    if self.in_flight and self.in_flight_records + count > self.budget:
                        return  # wait for an ack: the link has its records' worth
                self.sealed.popleft()
                self.sealed_records -= count
                self._transmit(msg)
                continue
            buf = self.buf
            if not buf or (
                self.in_flight
                and (
                    len(buf) < self.batch_size
                    or self.in_flight_records + self.batch_size > self.budget
                )
            ):
                if (
                    not buf
                    and self.timed
                    and not self.in_flight
                    and self.watermark != self.sent_watermark
                ):  # nothing to carry the watermark: send it alone
                    self.seq += 1
                    self._transmit(Batch(self.link, self.seq, [], self.epoch, 0.0, self.watermark))
                return  # nothing to send, or wait for an ack or a full batch
            if self.in_flight:  # busy: one larger batch, within the records budget
                self._transmit(self._cut(min(self.busy_cut, self.budget - self.in_flight_records)))
            else:  # idle: at once, whatever there is (a batch at most)
                self._transmit(self._cut())

    def barrier(self, checkpoint: int) -> None:
        """Queue everything buffered, then a barrier for ``checkpoint``, in that order."""
        if self.dead:
            return  # the checkpoint cannot complete anyway; the rollback comes first
        while self.buf:
            msg = self._cut()
            self.sealed_records += msg.count if self.encoded else len(msg.records)
            self.sealed.append(msg)
        self.seq += 1
        self.sealed.append(Barrier(self.link, self.seq, checkpoint, self.epoch))
        self.pump()

    def acked(self, seq: int | None = None) -> None:
        """The target has handled message ``seq`` and every one before it (None: the
        oldest in flight)."""
        now = time.monotonic()
        flight = self.flight
        if seq is None and flight:
            seq = flight[0][0]
        acked = 0
        popped = False
        while flight and flight[0][0] <= seq:
            count = flight.popleft()[1]
            self.in_flight -= 1
            self.in_flight_records -= count
            acked += count
            popped = True
        if not popped:
            return  # an older acknowledgement, overtaken by a later one
        if acked and LINK_SECONDS > 0:
            self._rated(acked, now)
        self.last_ack = now
        self.pump()

    def _rated(self, count: int, now: float) -> None:
        """Fold an acknowledgement of ``count`` records into the rate, and the budget."""
        elapsed = now - self.last_ack
        if elapsed <= 0:
            return
        sample = count / elapsed
        self.rate = sample if not self.rate else self.rate + _RATE_WEIGHT * (sample - self.rate)
        budget = round(self.rate * LINK_SECONDS)
        self.budget = min(self.max_budget, max(self.min_budget, budget))


class RecordsRoute:
    """Every record to one actor."""

    def __init__(self, outlet: Outlet) -> None:
        self.outlets = [outlet]
        self._buf = outlet.buf

    def emit(self, records: list, lane: int = 0) -> None:
        self._buf.extend(records)


class LanesRoute:
    """Each source connection's records to one of the next stage's lanes (``lane``:
    the connection's, counted from 0)."""

    def __init__(self, outlets: list[Outlet]) -> None:
        self.outlets = outlets
        self._bufs = [o.buf for o in outlets]

    def emit(self, records: list, lane: int = 0) -> None:
        self._bufs[lane % len(self._bufs)].extend(records)


class PartitionedRoute:
    """Each record to the actor that owns its key's partition."""

    def __init__(self, outlets: list[Outlet], by_partition: list[Outlet], errors: ErrorLog) -> None:
        self.outlets = outlets
        self.by_partition = by_partition
        self.count = len(by_partition)
        self.errors = errors
        self.cache: dict[Any, list] = {}

    def emit(self, records: list, lane: int = 0) -> None:
        cache = self.cache
        for rec in records:
            key = rec[0]
            try:
                buf = cache[key]
            except KeyError:
                try:
                    buf = self.by_partition[partition_of(key, self.count)].buf
                except TypeError as exc:  # a key of an unsupported type
                    self.errors.report(exc, key, rec[1])
                    continue
                if len(cache) >= _KEY_CACHE_LIMIT:
                    cache.clear()
                cache[key] = buf
            except TypeError as exc:  # an unhashable key
                self.errors.report(exc, key, rec[1])
                continue
            buf.append(rec)


class EncodedRoute:
    """Every record, encoded by the sink's encoder, to one sink actor."""

    def __init__(self, outlet: Outlet, encode: Callable[[Any], bytes], errors: ErrorLog) -> None:
        self.outlets = [outlet]
        self._buf = outlet.buf
        self.encode = encode
        self.errors = errors

    def emit(self, records: list, lane: int = 0) -> None:
        encode = self.encode
        append = self._buf.append
        for rec in records:  # (key, value) or, with windows, (key, value, event time)
            value = rec[1]
            try:
                data = encode(value)
            except Exception as exc:
                self.errors.report(exc, rec[0], value)
                continue
            if data.__class__ is not bytes:
                if isinstance(data, bytearray | memoryview):
                    data = bytes(data)
                else:
                    self.errors.report(
                        TypeError(f"encoder returned {type(data).__name__}, not bytes"),
                        rec[0],
                        value,
                    )
                    continue
            append(data)


def build_routes(
    routes: tuple[Route, ...],
    send: Send,
    window: int,
    batch_size: int,
    encoder_for: Callable[[tuple[int, int]], tuple[Callable[[Any], bytes], ErrorLog]],
    router_errors: ErrorLog,
    epoch: int = 0,
    timed: bool = False,
    serialize: Callable[[Any], bytes] | None = None,
) -> tuple[list, dict[int, Outlet]]:
    """Outlets and routes for a placed actor's ``routes``; outlets indexed by link id.

    ``timed``: the app has windows (records carry event times, links watermarks);
    ``serialize``: the app's own, for the values of records to other actors."""
    outlets: dict[int, Outlet] = {}

    def outlet(target: Any, encoded: bool = False) -> Outlet:
        o = Outlet(send, target, len(outlets) + 1, window, batch_size, encoded, epoch)
        if not encoded:
            o.timed = timed
            o.serialize = serialize
            o.codec_errors = router_errors
        outlets[o.link] = o
        return o

    built: list = []
    for r in routes:
        if r.kind == "records":
            built.append(RecordsRoute(outlet(r.targets[0])))
        elif r.kind == "lanes":
            built.append(LanesRoute([outlet(t) for t in r.targets]))
        elif r.kind == "encoded":
            assert r.sink is not None
            encode, errors = encoder_for(r.sink)
            built.append(EncodedRoute(outlet(r.targets[0], encoded=True), encode, errors))
        elif r.kind == "partitioned":
            distinct: dict[str, Outlet] = {}
            by_partition = []
            for i, t in enumerate(r.targets):
                o = distinct.get(str(t))
                if o is None:
                    o = distinct[str(t)] = outlet(t)
                    o.worker = r.workers[i] if r.workers else ""
                by_partition.append(o)
            built.append(PartitionedRoute(list(distinct.values()), by_partition, router_errors))
        else:
            msg = f"unknown route kind {r.kind!r}"
            raise ValueError(msg)
    return built, outlets
