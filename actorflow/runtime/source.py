"""Source actors: a TCP listener reading length-prefixed frames, or a generator.

The TCP source does its socket I/O inside Thespian's loop (ThespianWatch).
When its outlets are backlogged it stops reading, so the kernel's socket
buffers fill and the sender blocks: back-pressure reaches the sender.
A frame that announces more than the size limit, or a run of frames the
decoder rejects, closes that one connection with a logged error.
In an app with windows a source stamps each record with its event time and sends
its watermark downstream, on a timer too, so windows fire while no data comes.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import time
import zlib
from datetime import timedelta
from typing import Any

from actorflow.api import Decoder, GenSourceConfig, TCPSourceConfig
from actorflow.errors import FrameError
from actorflow.messages import (
    CheckpointReached,
    SourceProgress,
    SourceStarted,
    StartCheckpoint,
    StartSource,
    Unhold,
)
from actorflow.net import close_after_last_words
from actorflow.resilience import checkpoint_file, read_offsets, write_offsets
from actorflow.runtime.stage import StageActor
from actorflow.runtime.steps import ErrorLog
from actorflow.runtime.watermarks import TICK, SourceClock
from actorflow.security import check_stream_proof
from actorflow.transport import sealed
from actorflow.wire import control_frame, is_control_start, read_control

log = logging.getLogger("actorflow.source")

READ_SIZE = 128 * 1024
BIND_PATIENCE = 5.0  # seconds a re-placed source waits for its port to be free
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
        self.frames = 0  # frames read, decodable or not (a replaying sender's offset)

    @staticmethod
    def _error(msg: str, records: list) -> FrameError:
        err = FrameError(msg)
        err.records = records  # type: ignore[attr-defined]  # decoded before the bad frame
        return err

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
                raise self._error(msg, out)
            stop = pos + hl + size
            if stop > end:
                break
            payload = buf[pos + hl : stop]
            pos = stop
            self.frames += 1
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
                    raise self._error(msg, out) from exc
        self.rest = buf[pos:] if pos < end else b""
        return out


class _Connection:
    def __init__(self, sock: socket.socket, peer: str, reader: FrameDecoder) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = reader
        self.stream: str | None = None  # set by an acknowledged sender's hello
        self.greeted = False  # the first bytes have been looked at
        self.head = b""  # bytes of an incomplete hello
        self.challenge: tuple[str, str] | None = None  # (stream, challenge) awaiting proof
        self.lane = 0  # which lane of the next stage takes its records


class SourceActor(StageActor):
    """Runs one source of the app on this worker."""

    kind = "source"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        spec = self.app.stage(self.config.stage.stage.app_stages[0]).spec
        self.source_name, self.source_config = spec[0], spec[1]
        self.clock = SourceClock(spec[2] if len(spec) > 2 else None, time.time_ns())
        self.errors = ErrorLog(
            f"decoder of {self.source_name}", self.config.settings.error_log_limit
        )
        self.error_logs.append(self.errors)
        self.listener: socket.socket | None = None
        self.conns: dict[int, _Connection] = {}
        self.paused = False
        self.generating = False
        self.holding = False  # at the cut of a grow or shrink: take nothing more for now
        self.started_at: str | None = None  # where it listens, once started
        self.connections_total = 0
        self.frame_errors = 0
        # Offsets: data frames taken per acknowledged stream, counted from the restored
        # checkpoint; what each checkpoint covered; records from plain senders.
        self.offsets: dict[str, int] = {}
        self.covered: dict[str, int] = {}  # what the last completed checkpoint covers
        self.offsets_at: dict[int, dict[str, int]] = {}
        self.streams: dict[str, _Connection] = {}
        self.plain = 0
        self.plain_at: dict[int, int] = {}
        self.plain_done = 0
        self.generated = 0
        files, restore = self.config.files, self.config.restore
        if restore and files is not None:
            path = checkpoint_file(files.offsets(self.stage_id, restore), restore)
            self.offsets = read_offsets(path)
            self.covered = dict(self.offsets)
            self.generated = self.offsets.get("", 0)
            log.info(
                "source %r: restored offsets of checkpoint %d: %s",
                self.source_name,
                restore,
                self.offsets,
            )
        self.adopt(self.config.adopt_offsets)

    def adopt(self, offsets: dict[str, int]) -> None:
        """Take over the streams of a leaving worker's source, at their offsets at the cut."""
        for stream, offset in offsets.items():
            if stream and stream not in self.offsets:
                self.offsets[stream] = self.covered[stream] = offset
                log.info("source %r: takes over stream %r at %d", self.source_name, stream, offset)

    def on_reconfigured(self, cfg: Any) -> None:
        """Kept through a grow or shrink: its connections and offsets stay; the new
        placement's routes take what it reads once it is told to start again."""
        self.adopt(cfg.adopt_offsets)
        log.info(
            "source %r: kept through the rescale, its %d connections open",
            self.source_name,
            len(self.conns),
        )

    def backlogged(self) -> bool:
        return self.holding or super().backlogged()

    def hold(self) -> None:
        """Stop reading (and generating) right after a cut's barrier: what comes after
        it waits in the sockets for the next placement."""
        self.holding = True
        self.paused = True
        self.refresh_watch()

    def unhold(self) -> None:
        if not self.holding:
            return
        self.holding = False
        self.paused = self.backlogged()
        self.refresh_watch()
        if self.generating:
            self.generate()

    def on_other(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, StartSource) and self.started_at is not None:
            self.unhold()  # kept through a grow or shrink: listening already
            sid, worker = self.stage_id, self.config.worker if self.config else "?"
            self.send(sender, SourceStarted(sid, worker, self.started_at, epoch=self.epoch))
        elif isinstance(msg, Unhold):
            if msg.epoch == self.epoch:
                self.unhold()
        elif isinstance(msg, StartSource):
            self.start_requester = sender
            self.bind_deadline = time.monotonic() + (BIND_PATIENCE if self.epoch > 1 else 0)
            self.try_start()
        elif isinstance(msg, StartCheckpoint):
            if msg.epoch == self.epoch and not self.retired:
                self.start_checkpoint(msg.checkpoint, sender)
                if msg.hold:
                    self.hold()
        else:
            super().on_other(msg, sender)

    # ---- checkpoints --------------------------------------------------------

    def start_checkpoint(self, checkpoint: int, coordinator: Any) -> None:
        """Record what this checkpoint covers, durably, then send its barrier."""
        assert self.config is not None
        offsets = dict(self.offsets)
        if isinstance(self.source_config, GenSourceConfig):
            offsets[""] = self.generated
        if self.config.files is not None:
            write_offsets(self.config.files.offsets(self.stage_id, checkpoint), offsets)
        self.offsets_at[checkpoint] = offsets
        self.plain_at[checkpoint] = self.plain
        self.send(
            coordinator,
            SourceProgress(self.stage_id, self.config.worker, checkpoint, self.plain, offsets),
        )
        self.checkpoints += 1
        for o in self.outlets.values():
            o.barrier(checkpoint)
        if not self.outlets:
            self.send(
                coordinator,
                CheckpointReached(checkpoint, self.epoch, self.stage_id, self.config.worker),
            )

    def on_checkpoint_done(self, checkpoint: int) -> None:
        """Tell acknowledged senders what the cluster will never need again."""
        offsets = self.offsets_at.pop(checkpoint, None)
        for old in [c for c in self.offsets_at if c < checkpoint]:
            del self.offsets_at[old]
        self.plain_done = self.plain_at.pop(checkpoint, self.plain_done)
        for old in [c for c in self.plain_at if c < checkpoint]:
            del self.plain_at[old]
        if offsets:
            self.covered.update(offsets)
            for stream, offset in offsets.items():
                conn = self.streams.get(stream)
                if conn is not None:
                    self.tell_sender(conn, {"ack": offset})
        if self.config is not None and self.config.files is not None:
            self.config.files.forget_before(self.stage_id, checkpoint)

    def unreplayable(self) -> int:
        return self.plain - self.plain_done

    def retire(self, sender: Any, msg: Any = None) -> None:
        """A leaving worker's source sends its acknowledged senders to ``moved_to``."""
        moved_to = getattr(msg, "moved_to", None)
        if moved_to:
            for stream, conn in list(self.streams.items()):
                self.tell_sender(conn, {"moved": moved_to})
                log.info("source %r: stream %r moves to %s", self.source_name, stream, moved_to)
        super().retire(sender, msg)

    def tell_sender(self, conn: _Connection, message: dict) -> None:
        try:
            conn.sock.send(control_frame(message))
        except (BlockingIOError, InterruptedError):
            pass  # a later acknowledgement supersedes this one
        except OSError as exc:
            self.close(conn, f"write failed: {exc}")

    def try_start(self) -> None:
        started = self.start()
        if started is not None:
            self.send(self.start_requester, started)

    def start(self) -> SourceStarted | None:
        """Listen (or start generating); None while waiting for the port to be free."""
        assert self.config is not None
        sid, worker = self.config.stage.stage.id, self.config.worker
        cfg = self.source_config
        if self.timed:
            self.clock.started = time.time_ns()
            self.wakeupAfter(timedelta(seconds=TICK), "tick")
        if isinstance(cfg, GenSourceConfig):
            self.gen_value = cfg.gen.initial_value()
            for _ in range(self.generated):  # replay: skip what the checkpoint covers
                if self.gen_value is None:
                    break
                self.gen_value = cfg.gen.apply(self.gen_value)
            self.generating = True
            self.wakeupAfter(timedelta(0), "generate")
            self.started_at = "generator"
            return SourceStarted(sid, worker, "generator", epoch=self.epoch)
        assert isinstance(cfg, TCPSourceConfig)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # A fixed receive buffer (inherited by accepted connections) bounds what the
            # kernel holds for us while we pause; autotuning would let it grow to tens of MB.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.bind((cfg.host, cfg.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if time.monotonic() < self.bind_deadline:  # our crashed incarnation may hold it
                self.wakeupAfter(timedelta(milliseconds=100), "bind")
                return None
            where = f"{cfg.host}:{cfg.port}"
            why = f"source {self.source_name!r} cannot listen on {where}: {exc.strerror or exc}"
            return SourceStarted(sid, worker, None, why, self.epoch)
        self.listener = sock
        host, port = sock.getsockname()[:2]
        self.started_at = f"{host}:{port}"
        self.refresh_watch()
        log.info("source %r listening on %s:%d", self.source_name, host, port)
        return SourceStarted(sid, worker, f"{host}:{port}", epoch=self.epoch)

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
            try:  # acknowledgements and notices are small frames: none waits behind Nagle's
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # reset already: the first read finds out and closes it
                pass
            peer = f"{addr[0]}:{addr[1]}"
            reader = FrameDecoder(
                self.source_config.decoder,
                min(self.source_config.max_frame_size, self.config.settings.max_frame_size),
                self.errors,
                peer,
            )
            conn = self.conns[sock.fileno()] = _Connection(sock, peer, reader)
            conn.lane = self.connections_total  # plain connections take the lanes in turn
            self.connections_total += 1
            log.info("source %r: connection from %s", self.source_name, peer)

    def receive(self, conn: _Connection, peer: str) -> bytes:
        """What ``conn`` has for us now; b"" (the connection closed) if it is gone."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError as exc:
            self.close(conn, f"read failed: {exc}")
            return b""
        if not data:
            self.close(conn, f"closed by the {peer}")
        return data

    def read(self, conn: _Connection) -> None:
        data = self.receive(conn, "sender")
        if not data:
            return
        if not conn.greeted:
            data = self.greet(conn, data)
            if not data:
                return
        started = time.monotonic()
        before = conn.reader.frames
        failed = None
        try:
            records = conn.reader.feed(data)
        except FrameError as exc:
            self.frame_errors += 1
            log.error("source %r: %s", self.source_name, exc)
            records, failed = exc.records, exc  # type: ignore[attr-defined]
        frames = conn.reader.frames - before
        if conn.stream is not None:
            self.offsets[conn.stream] += frames
        else:
            self.plain += frames
        if records:
            self.records_in += len(records)
            self.batches_in += 1
            self.emit_stamped(records, conn.lane)
            self.processed(records, time.monotonic() - started)
        if failed is not None:
            self.close(conn, None)

    def greet(self, conn: _Connection, data: bytes) -> bytes:
        """Look at a connection's first bytes: a hello makes it an acknowledged stream,
        once the sender proves it holds the stream's token (when the cluster is
        authenticated). Returns the data frames that follow (b"" while the hello is
        incomplete)."""
        buf = conn.head + data
        if conn.challenge is None and not is_control_start(buf):
            conn.greeted = True
            return buf
        try:
            hello, end = read_control(buf)
        except ValueError as exc:
            log.error(
                "source %r: connection from %s: %s; closing it", self.source_name, conn.peer, exc
            )
            self.close(conn, None)
            return b""
        if hello is None:
            conn.head = buf
            return b""
        conn.head = b""
        if conn.challenge is not None:
            stream, challenge = conn.challenge
            conn.challenge = None
            secret = sealed.secret
            if secret is None or not check_stream_proof(
                secret, stream, challenge, str(hello.get("proof", ""))
            ):
                self.streams_refused = getattr(self, "streams_refused", 0) + 1
                log.error(
                    "source %r: connection from %s cannot prove it may claim stream %r "
                    "(wrong stream token); closing it, the stream is untouched",
                    self.source_name,
                    conn.peer,
                    stream,
                )
                self.tell_sender(conn, {"error": f"wrong token for stream {stream!r}"})
                self.close(conn, None)
                return b""
            return self.claim(conn, stream, buf[end:])
        stream = str(hello.get("stream", ""))
        why = None
        if not stream:
            why = "names no stream"
        elif self.config is not None and self.config.settings.checkpoint_every <= 0:
            why = "this cluster takes no checkpoints (--time-between-checkpoints 0)"
        if why:
            log.error(
                "source %r: connection from %s %s; closing it", self.source_name, conn.peer, why
            )
            self.tell_sender(conn, {"error": why})
            self.close(conn, None)
            return b""
        if sealed.secret is not None:  # prove it first: nobody else may close or advance it
            conn.challenge = (stream, secrets.token_hex(16))
            self.tell_sender(conn, {"challenge": conn.challenge[1]})
            rest = buf[end:]
            return self.greet(conn, rest) if rest else b""
        return self.claim(conn, stream, buf[end:])

    def claim(self, conn: _Connection, stream: str, rest: bytes) -> bytes:
        """``conn`` is now the one connection of ``stream``: tell it where to resume."""
        conn.greeted = True
        old = self.streams.get(stream)
        if old is not None:  # the sender reconnected before we saw the old one close
            self.close(old, f"replaced by a new connection of stream {stream!r}")
        conn.stream = stream
        conn.lane = zlib.crc32(stream.encode())  # a stream keeps its lane when it reconnects
        self.streams[stream] = conn
        resume = self.offsets.setdefault(stream, 0)
        log.info(
            "source %r: stream %r from %s resumes at message %d",
            self.source_name,
            stream,
            conn.peer,
            resume,
        )
        self.tell_sender(conn, {"resume": resume, "ack": self.covered.get(stream, 0)})
        return rest

    def close(self, conn: _Connection, why: str | None) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        if conn.stream is not None and self.streams.get(conn.stream) is conn:
            del self.streams[conn.stream]
        if conn.reader.rest and why:
            why += f" ({len(conn.reader.rest)} bytes of an incomplete frame dropped)"
        close_after_last_words(conn.sock)  # a refusal or a move notice still arrives
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

    def emit_stamped(self, records: list, lane: int = 0) -> None:
        """Emit records read or generated now; with windows, stamped with their event
        time and followed by the source's watermark."""
        if not self.timed:
            self.emit(records, time.time(), lane)
            return
        now = time.time_ns()
        self.emit(self.clock.stamp(records, now, self.errors), now / 1e9, lane)
        self.pass_watermark(self.clock.watermark(now))

    def on_wakeup(self, payload: Any) -> None:
        if payload == "tick" and not self.retired:
            if not self.holding:  # past the cut, watermarks wait for the next placement
                self.pass_watermark(self.clock.watermark(time.time_ns()))
            self.wakeupAfter(timedelta(seconds=TICK), "tick")
        elif payload == "generate" and self.generating:
            self.generate()
        elif payload == "bind" and not self.retired:
            self.try_start()

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
        self.generated += len(records)
        self.emit_stamped(records)
        if value is None:
            self.generating = False
            log.info("source %r: generator finished", self.source_name)
        elif not self.backlogged():
            self.wakeupAfter(timedelta(0), "generate")

    def on_exit(self) -> None:
        self.generating = False
        for conn in list(getattr(self, "conns", {}).values()):
            self.close(conn, None)
        if getattr(self, "listener", None) is not None:
            self.listener.close()
            self.listener = None

    def counters(self) -> dict:
        c = super().counters()
        c.update(
            connections=len(getattr(self, "conns", {})),
            connections_total=getattr(self, "connections_total", 0),
            frame_errors=getattr(self, "frame_errors", 0),
            paused=getattr(self, "paused", False),
            streams=dict(getattr(self, "offsets", {})),
            unreplayable=getattr(self, "plain", 0),
            streams_refused=getattr(self, "streams_refused", 0),
        )
        if self.timed and hasattr(self, "clock"):
            c["watermark"] = self.clock.watermark(time.time_ns())
        return c
