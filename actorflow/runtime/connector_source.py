"""The connector source: the at-least-once protocol of :mod:`actorflow.connectors.protocol`.

It is the "source" actor of every app: with a plain TCP config it is the TCP source of
:mod:`actorflow.runtime.source` unchanged. With a ``SourceConnectorConfig`` it reuses
that actor's listener, back-pressure (it stops reading while its outlets are
backlogged, and grants no credits meanwhile), offsets in the resilience files
(a stream's point of reference, written at every checkpoint) and acknowledgements
sent only once a checkpoint covering them has completed.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actorflow.api import EventTime
from actorflow.connectors import protocol as p
from actorflow.connectors.client import check_cookie
from actorflow.experimental import SourceConnectorConfig
from actorflow.runtime.source import GARBAGE_RUN, SourceActor, _Connection
from actorflow.runtime.watermarks import SourceClock

log = logging.getLogger("actorflow.source")


def _no_time(record: Any) -> int:
    return 0


class _Link:
    """One connector's connection state."""

    def __init__(self, limit: int) -> None:
        self.splitter = p.FrameSplitter(limit)  # its limit; the source splits frames itself
        self.rest = b""  # an incomplete frame
        self.hello = False
        self.streams: dict[int, str] = {}  # stream id -> stream name
        self.used = 0  # credits used since the last refill
        self.bad_run = 0


class ConnectorSourceActor(SourceActor):
    """Runs one source; speaks the connector protocol when the app declares one."""

    def setup(self) -> None:
        super().setup()
        self.connector = isinstance(self.source_config, SourceConnectorConfig)
        self.links: dict[int, _Link] = {}
        self.stream_links: dict[str, _Connection] = {}  # stream name -> its connection
        self.refused = 0
        self.duplicates = 0
        self.extract = self.clock.event_time  # the app's event_time extractor, if any
        if self.connector and self.timed and self.extract is None:
            # Connector messages carry event times: the watermark follows the highest
            # seen (as with an extractor), not the wall clock, so they are not late.
            self.clock = SourceClock(EventTime(_no_time), time.time_ns())

    # ---- reading ---------------------------------------------------------------

    def read(self, conn: _Connection) -> None:
        if not self.connector:
            super().read(conn)
            return
        data = self.receive(conn, "connector")
        if not data:
            return
        link = self.links.setdefault(conn.sock.fileno(), _Link(self._limit() + 64))
        started = time.monotonic()
        records: list = []
        try:
            if not self._frames(conn, link, data, records):
                return
        except p.ProtocolError as exc:
            self.frame_errors += 1
            log.error("source %r: connector %s: %s; closing it", self.source_name, conn.peer, exc)
            self._emit(records, started)
            self.close(conn, None)
            return
        self._emit(records, started)
        if link.bad_run >= GARBAGE_RUN:
            log.error(
                "source %r: connector %s: %d messages in a row could not be decoded; closing it",
                self.source_name,
                conn.peer,
                link.bad_run,
            )
            self.close(conn, None)
            return
        self._refill(conn, link)

    def _limit(self) -> int:
        assert self.config is not None
        return min(self.source_config.max_frame_size, self.config.settings.max_frame_size)

    def _emit(self, records: list, started: float) -> None:
        if not records:
            return
        self.records_in += len(records)
        self.batches_in += 1
        if self.timed:
            now = time.time_ns()
            clock = self.clock
            out = [(None, r, ts if ts > 0 else now) for r, ts in records]
            clock.last_record = now
            top = max(ts for _, _, ts in out)
            if top > clock.highest:
                clock.highest = top
            self.emit(out, now / 1e9)
            self.pass_watermark(clock.watermark(now))
        else:
            self.emit(records, time.time())
        self.processed(records, time.monotonic() - started)

    def _frames(self, conn: _Connection, link: _Link, data: bytes, records: list) -> bool:
        """Take the frames in ``data``: messages into ``records`` ((record, event time)
        pairs with windows, else (None, record)) in one tight loop, the hot path; control
        frames one by one. False if the connection was closed."""
        buf = link.rest + data if link.rest else data
        pos, end = 0, len(buf)
        head, mhead = p.FRAME_HEAD.unpack_from, p.MESSAGE_HEAD.unpack_from
        limit, no_key, message = link.splitter.limit, p.NO_KEY, p.MESSAGE
        decode = self.source_config.decoder.func
        extract = self.extract.func if self.extract is not None else None
        offsets, streams, append = self.offsets, link.streams, records.append
        timed = self.timed
        while end - pos >= 5:
            size, kind = head(buf, pos)
            if size < 1 or size > limit:
                raise p.ProtocolError(f"a frame announces {size} bytes (limit {limit})")
            stop = pos + 4 + size
            if stop > end:
                break
            if kind == message and link.hello:
                if size < p.MESSAGE_HEAD.size - 4:
                    raise p.ProtocolError("a MESSAGE frame too short for its header")
                _, _, sid, mid, event_time, klen = mhead(buf, pos)
                pos, start = stop, pos + p.MESSAGE_HEAD.size + (0 if klen == no_key else klen)
                link.used += 1
                name = streams.get(sid)
                if name is None:
                    raise p.ProtocolError(f"a message of stream {sid}, which was never notified")
                if mid <= offsets[name]:
                    self.duplicates += 1  # already in the cluster: a resend after a reconnect
                    continue
                offsets[name] = mid
                payload = buf[start:stop]
                try:
                    record = decode(payload)
                except Exception as exc:
                    self.errors.report(exc, None, payload)
                    link.bad_run += 1
                    continue
                link.bad_run = 0
                if extract is not None:  # the app's own extractor wins
                    try:
                        event_time = extract(record)
                    except Exception as exc:
                        self.errors.report(exc, None, record)
                        continue
                append((record, event_time) if timed else (None, record))
                continue
            body = buf[pos + 5 : stop]
            pos = stop
            if kind == p.HELLO and not link.hello:
                if not self._hello(conn, link, p.parse_control(body)):
                    return False
            elif kind == p.NOTIFY and link.hello:
                self._notify(conn, link, p.parse_control(body))
            elif kind == p.EOS and link.hello:
                pass  # the stream stays claimed until the connection closes
            else:
                raise p.ProtocolError(f"frame type {kind} is not allowed here")
        link.rest = buf[pos:] if pos < end else b""
        return True

    def _hello(self, conn: _Connection, link: _Link, hello: dict) -> bool:
        assert self.config is not None
        why = None
        if not check_cookie(self.source_config.cookie, hello.get("cookie", "")):
            why = "wrong cookie"
        elif self.config.settings.checkpoint_every <= 0:
            why = "this cluster takes no checkpoints (--time-between-checkpoints 0)"
        if why:
            self.refused += 1
            log.error("source %r: connector %s refused: %s", self.source_name, conn.peer, why)
            self._tell(conn, p.control(p.ERROR, {"message": why}))
            self.close(conn, None)
            return False
        link.hello = True
        conn.greeted = True
        self._tell(conn, p.control(p.OK, {"credits": self.source_config.max_credits}))
        return True

    def _notify(self, conn: _Connection, link: _Link, msg: dict) -> None:
        stream_id = int(msg.get("stream_id", 0))
        name = str(msg.get("stream_name", ""))
        if not name:
            self._tell(conn, p.control(p.NOTIFY_ACK, {"success": False, "stream_id": stream_id}))
            return
        old = self.stream_links.get(name)
        if old is not None and old is not conn:
            self.close(old, f"replaced by a new connection of stream {name!r}")
        link.streams[stream_id] = name
        self.stream_links[name] = conn
        conn.stream = name
        if name not in self.offsets:  # a new stream starts where its connector is
            self.offsets[name] = int(msg.get("point_of_ref", 0) or 0)
        point = self.offsets[name]
        log.info(
            "source %r: stream %r from %s resumes after message %d",
            self.source_name,
            name,
            conn.peer,
            point,
        )
        self._tell(
            conn,
            p.control(
                p.NOTIFY_ACK, {"success": True, "stream_id": stream_id, "point_of_ref": point}
            ),
        )

    # ---- credits and acknowledgements -----------------------------------------------

    def _refill(self, conn: _Connection, link: _Link) -> None:
        """Give back the credits used, unless the pipeline is backlogged."""
        if link.used >= self.source_config.refill_credits and not self.backlogged():
            used, link.used = link.used, 0
            self._tell(conn, p.control(p.ACK, {"credits": used, "acks": []}))

    def on_ack(self, msg: Any) -> None:
        super().on_ack(msg)
        if self.connector and not self.backlogged():
            for fd, link in list(self.links.items()):
                conn = self.conns.get(fd)
                if conn is not None and link.used:
                    used, link.used = link.used, 0
                    self._tell(conn, p.control(p.ACK, {"credits": used, "acks": []}))

    def on_checkpoint_done(self, checkpoint: int) -> None:
        offsets = dict(self.offsets_at.get(checkpoint) or {})
        super().on_checkpoint_done(checkpoint)
        if not self.connector:
            return
        for name, point in offsets.items():
            conn = self.stream_links.get(name)
            link = self.links.get(conn.sock.fileno()) if conn is not None else None
            if conn is None or link is None:
                continue
            ids = [sid for sid, n in link.streams.items() if n == name]
            acks = [[sid, point] for sid in ids]
            self._tell(conn, p.control(p.ACK, {"credits": 0, "acks": acks}))

    def _tell(self, conn: _Connection, data: bytes) -> None:
        try:
            conn.sock.sendall(data)
        except OSError as exc:
            self.close(conn, f"write failed: {exc}")

    def close(self, conn: _Connection, why: str | None) -> None:
        self.links.pop(conn.sock.fileno(), None)
        if conn.stream is not None and self.stream_links.get(conn.stream) is conn:
            del self.stream_links[conn.stream]
        super().close(conn, why)

    def counters(self) -> dict:
        c = super().counters()
        if getattr(self, "connector", False):
            c.update(connectors_refused=self.refused, duplicates_skipped=self.duplicates)
        return c
