"""Source actors: a TCP listener reading length-prefixed frames, or a generator.

The TCP source does its socket I/O inside Thespian's loop (ThespianWatch).
When its outlets are backlogged it stops reading, so the kernel's socket
buffers fill and the sender blocks: back-pressure reaches the sender.
A frame that announces more than the size limit, or a run of frames the
decoder rejects, closes that one connection with a logged error.
"""

from __future__ import annotations

import logging
import socket
import struct
from datetime import timedelta
from typing import Any

from actorflow.api import Decoder, GenSourceConfig, TCPSourceConfig
from actorflow.errors import FrameError
from actorflow.messages import SourceStarted, StartSource
from actorflow.runtime.stage import StageActor
from actorflow.runtime.steps import ErrorLog

log = logging.getLogger("actorflow.source")

READ_SIZE = 128 * 1024
SOCKET_BUFFER = 256 * 1024
GARBAGE_RUN = 100  # consecutive undecodable frames that mark a connection as garbage


class FrameDecoder:
    """Splits a byte stream into frames and decodes each payload into a (None, record) pair."""

    def __init__(self, decoder: Decoder, max_frame: int, errors: ErrorLog, peer: str) -> None:
        self.header = struct.Struct(decoder.length_fmt)
        self.decode = decoder.func
        self.max_frame = max_frame
        self.errors = errors
        self.peer = peer
        self.rest = b""
        self.bad_run = 0

    def feed(self, data: bytes) -> list:
        buf = self.rest + data if self.rest else data
        unpack = self.header.unpack_from
        hl = self.header.size
        limit = self.max_frame
        decode = self.decode
        out: list = []
        append = out.append
        pos = 0
        end = len(buf)
        while end - pos >= hl:
            size = unpack(buf, pos)[0]
            if size > limit or size < 0:
                msg = (
                    f"connection from {self.peer}: a frame announces {size} bytes, "
                    f"over the limit of {limit} (max_frame_size); closing it"
                )
                raise FrameError(msg)
            stop = pos + hl + size
            if stop > end:
                break
            payload = buf[pos + hl : stop]
            pos = stop
            try:
                append((None, decode(payload)))
                self.bad_run = 0
            except Exception as exc:
                self.errors.report(exc, None, payload)
                self.bad_run += 1
                if self.bad_run >= GARBAGE_RUN:
                    msg = (
                        f"connection from {self.peer}: {self.bad_run} frames in a row "
                        "could not be decoded; closing it as garbage"
                    )
                    raise FrameError(msg) from exc
        self.rest = buf[pos:] if pos < end else b""
        return out


class _Connection:
    def __init__(self, sock: socket.socket, peer: str, reader: FrameDecoder) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = reader


class SourceActor(StageActor):
    """Runs one source of the app on this worker."""

    kind = "source"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        self.source_name, self.source_config = self.app.stage(
            self.config.stage.stage.app_stages[0]
        ).spec
        self.errors = ErrorLog(
            f"decoder of {self.source_name}", self.config.settings.error_log_limit
        )
        self.error_logs.append(self.errors)
        self.listener: socket.socket | None = None
        self.conns: dict[int, _Connection] = {}
        self.paused = False
        self.generating = False
        self.connections_total = 0
        self.frame_errors = 0

    def on_other(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, StartSource):
            self.send(sender, self.start())
        else:
            super().on_other(msg, sender)

    def start(self) -> SourceStarted:
        assert self.config is not None
        sid, worker = self.config.stage.stage.id, self.config.worker
        cfg = self.source_config
        if isinstance(cfg, GenSourceConfig):
            self.gen_value = cfg.gen.initial_value()
            self.generating = True
            self.wakeupAfter(timedelta(0), "generate")
            return SourceStarted(sid, worker, "generator")
        assert isinstance(cfg, TCPSourceConfig)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # A fixed receive buffer (inherited by accepted connections) bounds what the
            # kernel holds for us while we pause; autotuning would let it grow to tens of MB.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.bind((cfg.host, cfg.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            where = f"{cfg.host}:{cfg.port}"
            why = f"source {self.source_name!r} cannot listen on {where}: {exc.strerror or exc}"
            return SourceStarted(sid, worker, None, why)
        self.listener = sock
        host, port = sock.getsockname()[:2]
        self.refresh_watch()
        log.info("source %r listening on %s:%d", self.source_name, host, port)
        return SourceStarted(sid, worker, f"{host}:{port}")

    def refresh_watch(self) -> None:
        fds = [self.listener.fileno()] if self.listener is not None else []
        if not self.paused:
            fds.extend(self.conns)
        self.watch = fds

    def on_watch(self, ready: list[int]) -> None:
        for fd in ready:
            if self.listener is not None and fd == self.listener.fileno():
                self.accept()
            else:
                conn = self.conns.get(fd)
                if conn is not None and not self.paused:
                    self.read(conn)
        if not self.paused and self.backlogged():
            self.paused = True
        self.refresh_watch()

    def accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("source %r: accept failed: %s", self.source_name, exc)
                return
            sock.setblocking(False)
            peer = f"{addr[0]}:{addr[1]}"
            reader = FrameDecoder(
                self.source_config.decoder,
                min(self.source_config.max_frame_size, self.config.settings.max_frame_size),
                self.errors,
                peer,
            )
            self.conns[sock.fileno()] = _Connection(sock, peer, reader)
            self.connections_total += 1
            log.info("source %r: connection from %s", self.source_name, peer)

    def read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(conn, f"read failed: {exc}")
            return
        if not data:
            self.close(conn, "closed by the sender")
            return
        try:
            records = conn.reader.feed(data)
        except FrameError as exc:
            self.frame_errors += 1
            log.error("source %r: %s", self.source_name, exc)
            self.close(conn, None)
            return
        if records:
            self.records_in += len(records)
            self.batches_in += 1
            self.emit(records)

    def close(self, conn: _Connection, why: str | None) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        if conn.reader.rest and why:
            why += f" ({len(conn.reader.rest)} bytes of an incomplete frame dropped)"
        try:
            conn.sock.close()
        except OSError:
            pass
        if why:
            log.info("source %r: connection from %s %s", self.source_name, conn.peer, why)

    def on_ack(self, msg: Any) -> None:
        super().on_ack(msg)
        if self.backlogged():
            return
        if self.paused:
            self.paused = False
            self.refresh_watch()
        if self.generating:
            self.generate()

    def on_wakeup(self, payload: Any) -> None:
        if payload == "generate" and self.generating:
            self.generate()

    def generate(self) -> None:
        """Make up to one batch of generated records, unless backlogged."""
        assert self.config is not None
        if self.backlogged():
            return
        gen = self.source_config.gen
        records = []
        value = self.gen_value
        for _ in range(self.config.settings.batch_size):
            if value is None:
                break
            records.append((None, value))
            try:
                value = gen.apply(value)
            except Exception as exc:
                self.errors.report(exc, None, value)
                value = None
        self.gen_value = value
        self.records_in += len(records)
        self.emit(records)
        if value is None:
            self.generating = False
            log.info("source %r: generator finished", self.source_name)
        elif not self.backlogged():
            self.wakeupAfter(timedelta(0), "generate")

    def on_exit(self) -> None:
        for conn in list(self.conns.values()):
            self.close(conn, None)
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    def counters(self) -> dict:
        c = super().counters()
        c.update(
            connections=len(getattr(self, "conns", {})),
            connections_total=getattr(self, "connections_total", 0),
            frame_errors=getattr(self, "frame_errors", 0),
            paused=getattr(self, "paused", False),
        )
        return c
