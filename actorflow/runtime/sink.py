"""Sink actors: write encoded output to a TCP receiver.

The sink connects to its receiver and reconnects with back-off when the
receiver is not up yet or goes away, keeping what it holds. It acknowledges a
batch once the bytes are written or its buffer is below the bound, so a slow
or absent receiver slows the whole pipeline instead of growing memory.
Bytes already handed to the kernel when a receiver dies are lost with it.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import time
from collections import deque
from datetime import timedelta
from typing import Any

from actorflow.messages import Ack, CheckpointReached, EncodedBatch
from actorflow.metrics.report import Histogram
from actorflow.runtime.stage import StageActor

log = logging.getLogger("actorflow.sink")

_RETRY_WRITE = timedelta(milliseconds=2)
_CONNECT_POLL = timedelta(milliseconds=20)
CONNECT_TIMEOUT = 3.0  # seconds before a connect that neither succeeds nor fails is retried
SOCKET_BUFFER = 256 * 1024  # fixed, so the kernel's share of buffered output is bounded too


class SinkActor(StageActor):
    """Writes encoded batches to one TCP sink."""

    kind = "sink"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        st = self.config.stage.stage
        cfg = self.app.stage(st.app_stages[0]).spec[st.sink_index]
        self.address = (cfg.host, cfg.port)
        self.sock: socket.socket | None = None
        self.out = bytearray()
        self.limit = self.config.settings.sink_buffer
        self.backoff = 0.05
        self.reconnect_pending = False
        self.connecting: socket.socket | None = None  # a connect under way
        self.connect_started = 0.0
        self.write_pending = False
        self.warned = False
        self.written_bytes = 0
        self.connects = 0
        self.written_records = 0
        self.barriers: deque = deque()  # (bytes written when reached, checkpoint)
        self.unwritten: deque = deque()  # [bytes not yet written, records] per batch
        self.e2e = Histogram()  # source ingest to sink write, per record (with --metrics)
        self.connect()

    @property
    def where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def connect(self) -> None:
        """Start a non-blocking connect (a handler never waits on the network); it is
        looked at again until it completes, fails or takes longer than CONNECT_TIMEOUT."""
        self.reconnect_pending = False
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setblocking(False)
        try:
            code = sock.connect_ex(self.address)
        except OSError as exc:  # a name that does not resolve
            code = exc.errno or errno.EINVAL
        if code == 0:
            self.connected(sock)
        elif code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            self.connecting = sock
            self.connect_started = time.monotonic()
            self.wakeupAfter(_CONNECT_POLL, "connecting")
        else:
            sock.close()
            self.retry(os.strerror(code))

    def check_connect(self) -> None:
        sock = self.connecting
        if sock is None:
            return
        _, writable, _ = select.select([], [sock], [], 0)
        if writable:
            self.connecting = None
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                self.connected(sock)
            else:
                sock.close()
                self.retry(os.strerror(err))
        elif time.monotonic() - self.connect_started > CONNECT_TIMEOUT:
            self.connecting = None
            sock.close()
            self.retry("connection timed out")
        else:
            self.wakeupAfter(_CONNECT_POLL, "connecting")

    def retry(self, why: str) -> None:
        if not self.warned:
            log.warning(
                "sink: receiver at %s is not reachable (%s); retrying with back-off",
                self.where,
                why,
            )
            self.warned = True
        self.reconnect_pending = True
        self.wakeupAfter(timedelta(seconds=self.backoff), "reconnect")
        self.backoff = min(self.backoff * 2, self.config.settings.reconnect_max)

    def connected(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.watch = [sock.fileno()]
        self.backoff = 0.05
        self.connects += 1
        log.info("sink: connected to %s", self.where)
        self.warned = False
        self.flush()

    def disconnect(self, why: str) -> None:
        if self.sock is None:
            return
        log.warning(
            "sink: lost %s (%s); %d bytes held, reconnecting", self.where, why, len(self.out)
        )
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None
        self.watch = []
        if not self.reconnect_pending:
            self.reconnect_pending = True
            self.wakeupAfter(timedelta(seconds=self.backoff), "reconnect")

    def on_encoded(self, link: tuple[str, int], msg: EncodedBatch, sender: Any) -> None:
        self.batches_in += 1
        self.records_in += msg.count
        if self.latency is not None and msg.born:
            self.e2e.record(max(time.time() - msg.born, 0.0), msg.count)
        self.out += msg.data
        self.unwritten.append([len(msg.data), msg.count])
        started = time.monotonic()
        self.flush()
        self.processed(None, time.monotonic() - started)
        self.ack_later(link, sender, Ack(msg.link, msg.seq, msg.epoch))

    def holding_acks(self) -> bool:
        """Over its buffer limit (the receiver reads slowly, or is away), a sink holds
        back its acknowledgements: back-pressure instead of unbounded memory."""
        return len(getattr(self, "out", b"")) > getattr(self, "limit", 0)

    def flush(self) -> None:
        sock = self.sock
        if sock is None:
            return
        out = self.out
        while out:
            try:
                n = sock.send(out)
            except (BlockingIOError, InterruptedError):
                if not self.write_pending:
                    self.write_pending = True
                    self.wakeupAfter(_RETRY_WRITE, "write")
                break
            except OSError as exc:
                self.disconnect(str(exc))
                break
            self.written_bytes += n
            del out[:n]
            self.count_written(n)
            if self.barriers:
                self.report_written()
        if len(out) <= self.limit:
            self.release()

    def count_written(self, n: int) -> None:
        """Count the batches whose bytes are now all written."""
        unwritten = self.unwritten
        while n and unwritten:
            head = unwritten[0]
            if head[0] <= n:
                n -= head[0]
                self.written_records += head[1]
                unwritten.popleft()
            else:
                head[0] -= n
                n = 0

    def receive(self, ready: list[int], size: int, peer: str) -> bytes:
        """What the peer sent, if its socket is ready; b"" otherwise or once it is gone."""
        if self.sock is None or self.sock.fileno() not in ready:
            return b""
        try:
            data = self.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            self.disconnect(str(exc))
            return b""
        if not data:
            self.disconnect(f"closed by the {peer}")
        return data

    def on_watch(self, ready: list[int]) -> None:
        self.receive(ready, 4096, "receiver")  # a receiver sends nothing: only its close

    def on_wakeup(self, payload: Any) -> None:
        if self.retired:
            return
        if payload == "reconnect":
            self.connect()
        elif payload == "connecting":
            self.check_connect()
        elif payload == "write":
            self.write_pending = False
            self.flush()

    def pipeline_latency(self) -> dict | None:
        return self.e2e.take().to_wire()

    def after_barrier(self, checkpoint: int) -> None:
        """Everything before this checkpoint has reached this sink; once it is written
        too, tell the coordinator (a rollback never replays output a checkpoint covers,
        so output held for an absent receiver must be out before the checkpoint counts)."""
        self.barriers.append((self.written_bytes + len(self.out), checkpoint))
        self.report_written()

    def report_written(self) -> None:
        assert self.config is not None
        while self.barriers and self.barriers[0][0] <= self.written_bytes:
            _, checkpoint = self.barriers.popleft()
            if self.config.coordinator is not None:
                self.send(
                    self.config.coordinator,
                    CheckpointReached(checkpoint, self.epoch, self.stage_id, self.config.worker),
                )

    def retire(self, sender: Any, msg: Any = None) -> None:
        # Held output past the last completed checkpoint is produced again by the replay.
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        super().retire(sender, msg)

    def on_exit(self) -> None:
        if getattr(self, "connecting", None) is not None:
            self.connecting.close()
            self.connecting = None
        if getattr(self, "sock", None) is not None:
            try:
                self.sock.setblocking(True)
                self.sock.settimeout(1.0)
                self.sock.sendall(self.out)
            except OSError:
                pass
            self.sock.close()
            self.sock = None

    def counters(self) -> dict:
        c = super().counters()
        c.update(
            records_out=getattr(self, "written_records", 0),
            connected=getattr(self, "sock", None) is not None,
            bytes_written=getattr(self, "written_bytes", 0),
            bytes_held=len(getattr(self, "out", b"")),
            connects=getattr(self, "connects", 0),
        )
        return c
