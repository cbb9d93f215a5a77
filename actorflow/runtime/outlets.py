"""Outgoing links with flow control, and the routes built on them.

An :class:`Outlet` is one link to one downstream actor. It batches records up
to ``batch_size`` and allows at most ``window`` unacknowledged batches. A
partial batch goes out at once when nothing is in flight (low latency when
idle) and otherwise waits for the next acknowledgement or a full batch (large
batches under load). What cannot be sent stays in the outlet's buffer; the
owning actor stops taking input while any buffer holds a full batch, which
is how back-pressure reaches the source. Checkpoint barriers go through the same
window, in order with the batches.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from actorflow.messages import Barrier, Batch, EncodedBatch, Route
from actorflow.partitioning import partition_of
from actorflow.runtime.steps import ErrorLog

Send = Callable[[Any, Any], None]

_KEY_CACHE_LIMIT = 1 << 16


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
        self.seq = 0
        self.sent_records = 0
        self.sent_batches = 0

    @property
    def backlog(self) -> int:
        """Records waiting for credit (none for a dead target: they are dropped)."""
        return len(self.buf) + self.sealed_records

    def give_up(self) -> None:
        """The target's worker is gone: drop what waits for it, and all that comes, until
        the rollback that its restart brings replays them (they are counted)."""
        self.dead = True
        self.dropped += len(self.buf) + self.sealed_records
        self.buf.clear()
        self.sealed.clear()
        self.sealed_records = 0

    def _cut(self) -> Any:
        """The next batch from the front of buf, with the next sequence number."""
        buf = self.buf
        chunk = buf[: self.batch_size]
        del buf[: self.batch_size]
        self.seq += 1
        born = self.born
        if not buf:
            self.born = 0.0
        if self.encoded:
            return EncodedBatch(self.link, self.seq, b"".join(chunk), len(chunk), self.epoch, born)
        return Batch(self.link, self.seq, chunk, self.epoch, born)

    def _transmit(self, msg: Any) -> None:
        self.in_flight += 1
        if msg.__class__ is not Barrier:
            n = msg.count if self.encoded else len(msg.records)
            self.sent_records += n
            self.sent_batches += 1
        self.send(self.target, msg)

    def pump(self) -> None:
        """Send what the window allows: sealed messages first, then batches from buf."""
        if self.dead:
            self.dropped += len(self.buf)
            self.buf.clear()
            return
        if self.in_flight == 0:
            self.last_ack = time.monotonic()
        while self.in_flight < self.window:
            if self.sealed:
                msg = self.sealed.popleft()
                if msg.__class__ is not Barrier:
                    self.sealed_records -= msg.count if self.encoded else len(msg.records)
                self._transmit(msg)
                continue
            buf = self.buf
            if not buf or (self.in_flight and len(buf) < self.batch_size):
                return  # nothing to send, or wait for an ack or a full batch
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

    def acked(self) -> None:
        self.in_flight -= 1
        self.last_ack = time.monotonic()
        self.pump()


class RecordsRoute:
    """Every record to one actor."""

    def __init__(self, outlet: Outlet) -> None:
        self.outlets = [outlet]
        self._buf = outlet.buf

    def emit(self, records: list) -> None:
        self._buf.extend(records)


class PartitionedRoute:
    """Each record to the actor that owns its key's partition."""

    def __init__(self, outlets: list[Outlet], by_partition: list[Outlet], errors: ErrorLog) -> None:
        self.outlets = outlets
        self.by_partition = by_partition
        self.count = len(by_partition)
        self.errors = errors
        self.cache: dict[Any, list] = {}

    def emit(self, records: list) -> None:
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

    def emit(self, records: list) -> None:
        encode = self.encode
        append = self._buf.append
        for key, value in records:
            try:
                data = encode(value)
            except Exception as exc:
                self.errors.report(exc, key, value)
                continue
            if data.__class__ is not bytes:
                if isinstance(data, bytearray | memoryview):
                    data = bytes(data)
                else:
                    self.errors.report(
                        TypeError(f"encoder returned {type(data).__name__}, not bytes"), key, value
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
) -> tuple[list, dict[int, Outlet]]:
    """Outlets and routes for a placed actor's ``routes``; outlets indexed by link id."""
    outlets: dict[int, Outlet] = {}

    def outlet(target: Any, encoded: bool = False) -> Outlet:
        o = Outlet(send, target, len(outlets) + 1, window, batch_size, encoded, epoch)
        outlets[o.link] = o
        return o

    built: list = []
    for r in routes:
        if r.kind == "records":
            built.append(RecordsRoute(outlet(r.targets[0])))
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
