"""Receive, count and optionally save what a pipeline's sinks send, like Wallaroo's data_receiver.

End-to-end tests and load tests need a TCP sink target that many workers can connect to
at once, that keeps up with them, and that says when an expected number of messages has
arrived. One thread with `selectors` serves every connection (and reconnections); the
same `Receiver` runs in a background thread for in-process tests and in the foreground
for `actorflow receive`, which announces "listening on HOST:PORT" on stderr as soon as it
is bound so that whoever starts it can wait for that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import json
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from actorflow.tools.framing import (
    DEFAULT_MAX_FRAME,
    FrameReader,
    FrameTooLarge,
    format_address,
    parse_address,
)

RECV_SIZE = 256 * 1024
POLL_SECONDS = 0.1  # longest the loop sleeps before re-checking stop, `until` and `tick`
FLUSH_EVERY = 0.5  # seconds between flushes of the output file

Sink = Callable[[Any], None]  # list[bytes] of payloads when framed, else raw bytes

_WAKE = object()


def _stderr_log(message: str) -> None:
    print(f"actorflow receive: {message}", file=sys.stderr, flush=True)


class _Conn:
    __slots__ = ("peer", "reader")

    def __init__(self, peer: str, reader: FrameReader | None) -> None:
        self.peer = peer
        self.reader = reader


class Receiver:
    """A TCP server that counts frames (or newline-terminated lines) from many connections.

    With `framed`, each connection's stream is split into 4-byte length-prefixed frames
    and `sink` gets lists of payloads (headers removed); otherwise `sink` gets the raw
    bytes as received and messages are counted as newlines. `tick` is called from the
    serving thread at least every 0.1 s. `log` gets warnings (a peer sending a bad frame).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        framed: bool = True,
        sink: Sink | None = None,
        tick: Callable[[], None] | None = None,
        max_frame: int = DEFAULT_MAX_FRAME,
        log: Callable[[str], None] | None = _stderr_log,
    ) -> None:
        self.host = host
        self.port = port
        self.framed = framed
        self.sink = sink
        self.tick = tick
        self.max_frame = max_frame
        self.log = log
        self.address: tuple[str, int] | None = None
        self._listener: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._done = False
        self._cond = threading.Condition()
        self._messages = 0
        self._bytes = 0
        self._connections = 0
        self._open = 0
        self._first_at: float | None = None
        self._last_at: float | None = None

    # -- counters -------------------------------------------------------------------------

    @property
    def messages(self) -> int:
        """Frames (framed) or newline-terminated lines (raw) received so far."""
        return self._messages

    @property
    def byte_count(self) -> int:
        """Bytes received off the wire so far, frame headers included."""
        return self._bytes

    @property
    def first_at(self) -> float | None:
        """`time.monotonic()` when the first message arrived, or None."""
        return self._first_at

    @property
    def last_at(self) -> float | None:
        """`time.monotonic()` when the latest message arrived, or None."""
        return self._last_at

    @property
    def connections(self) -> int:
        """Connections accepted so far (reconnections count again)."""
        return self._connections

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        return self._open

    def summary(self) -> dict[str, Any]:
        """Return {"messages", "bytes", "seconds", "rate", "connections"}; seconds span the
        first to the last message."""
        seconds = 0.0
        if self._first_at is not None and self._last_at is not None:
            seconds = self._last_at - self._first_at
        return {
            "messages": self._messages,
            "bytes": self._bytes,
            "seconds": round(seconds, 6),
            "rate": round(self._messages / seconds, 1) if seconds > 0 else 0.0,
            "connections": self._connections,
        }

    # -- life cycle -----------------------------------------------------------------------

    def bind(self) -> tuple[str, int]:
        """Bind and listen; return the bound (host, port). Raises OSError if it cannot."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.create_server((self.host, self.port), family=family, backlog=128)
        listener.setblocking(False)
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(listener, selectors.EVENT_READ, None)
        selector.register(wake_r, selectors.EVENT_READ, _WAKE)
        self._listener, self._selector = listener, selector
        self._wake_r, self._wake_w = wake_r, wake_w
        host, port = listener.getsockname()[:2]
        self.address = (host, port)
        return self.address

    def start(self) -> tuple[str, int]:
        """Bind, then serve in a background thread; return the bound (host, port)."""
        address = self.bind()
        self._thread = threading.Thread(target=self.serve, name="actorflow-receiver", daemon=True)
        self._thread.start()
        return address

    def request_stop(self) -> None:
        """Ask `serve` to return soon; safe to call from a signal handler or another thread."""
        self._stopping = True
        if self._wake_w is not None:
            try:
                self._wake_w.send(b"\0")
            except OSError:
                pass

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close every socket, and wait for the background thread."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        elif not self._done:
            self._close()

    def wait_for(self, n: int, timeout: float | None = None) -> bool:
        """Block until `n` messages have arrived (True) or `timeout` passed or it stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self._messages >= n or self._done, timeout)
            return self._messages >= n

    def serve(self, until: Callable[[], bool] | None = None) -> None:
        """Accept and read connections until stopped or `until()` returns true; then close."""
        if self._selector is None:
            self.bind()
        selector = self._selector
        assert selector is not None
        select = selector.select
        tick = self.tick
        try:
            while not self._stopping and not (until is not None and until()):
                for key, _events in select(POLL_SECONDS):
                    data = key.data
                    if data is None:
                        self._accept(selector)
                    elif data is _WAKE:
                        try:
                            key.fileobj.recv(4096)  # type: ignore[union-attr]
                        except OSError:
                            pass
                    else:
                        self._read(selector, key.fileobj, data)  # type: ignore[arg-type]
                if tick is not None:
                    tick()
        finally:
            self._close()

    # -- internals ------------------------------------------------------------------------

    def _accept(self, selector: selectors.BaseSelector) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of file descriptors: keep serving the others
                if self.log is not None:
                    self.log(f"accept failed: {exc}")
                return
            sock.setblocking(False)
            reader = FrameReader(self.max_frame) if self.framed else None
            selector.register(sock, selectors.EVENT_READ, _Conn(format_address(*peer[:2]), reader))
            self._connections += 1
            self._open += 1

    def _drop(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        selector.unregister(sock)
        sock.close()
        self._open -= 1

    def _read(self, selector: selectors.BaseSelector, sock: socket.socket, conn: _Conn) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset by peer: treat like a close
        if not data:
            if conn.reader is not None and conn.reader.pending and self.log is not None:
                self.log(
                    f"connection from {conn.peer} closed in the middle of a frame "
                    f"({conn.reader.pending} bytes dropped)"
                )
            self._drop(selector, sock)
            return
        self._bytes += len(data)
        reader = conn.reader
        if reader is not None:
            try:
                payloads = reader.feed(data)
            except FrameTooLarge as exc:
                if self.log is not None:
                    self.log(f"dropping connection from {conn.peer}: {exc}")
                self._drop(selector, sock)
                payloads = exc.payloads
            count = len(payloads)
            if not count:
                return
            if self.sink is not None:
                self.sink(payloads)
        else:
            count = data.count(b"\n")
            if self.sink is not None:
                self.sink(data)
        now = time.monotonic()
        if self._first_at is None:
            self._first_at = now
        self._last_at = now
        with self._cond:
            self._messages += count
            self._cond.notify_all()

    def _close(self) -> None:
        selector = self._selector
        if selector is not None:
            for key in list(selector.get_map().values()):
                if key.data is not None and key.data is not _WAKE:
                    self._open -= 1
                key.fileobj.close()  # type: ignore[union-attr]
            selector.close()
            self._selector = None
        if self._wake_w is not None:
            self._wake_w.close()
        self._listener = self._wake_r = self._wake_w = None
        with self._cond:
            self._done = True
            self._cond.notify_all()


class _Writer:
    """Buffered output for received data, flushed at least every FLUSH_EVERY seconds."""

    def __init__(self, path: str, framed: bool) -> None:
        self._file: IO[bytes]
        if path == "-":
            self._file = open(sys.stdout.fileno(), "wb", buffering=1 << 20, closefd=False)
        else:
            self._file = open(path, "wb", buffering=1 << 20)
        self._framed = framed
        self._write = self._file.write
        self._next_flush = time.monotonic() + FLUSH_EVERY

    def __call__(self, data: Any) -> None:
        self._write(b"".join(data) if self._framed else data)

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self._next_flush:
            self._file.flush()
            self._next_flush = now + FLUSH_EVERY

    def close(self) -> None:
        try:
            self._file.flush()
        finally:
            self._file.close()


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the `receive` flags to `p`."""
    p.add_argument(
        "--listen",
        required=True,
        metavar="H:P",
        help="address to listen on; port 0 picks a free port (see stderr)",
    )
    p.add_argument(
        "--framed",
        action="store_true",
        help="split 4-byte length-prefixed frames and write payloads only "
        "(default: write raw bytes, count newline-terminated lines)",
    )
    p.add_argument(
        "--output",
        default="-",
        metavar="F",
        help="file to write what arrives to (default: - for stdout)",
    )
    p.add_argument("--no-write", action="store_true", help="count only, write nothing")
    p.add_argument(
        "--expect",
        type=int,
        default=None,
        metavar="N",
        help="exit 0 as soon as N messages have arrived",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="S",
        help="with --expect: exit 1 if they have not all arrived S seconds after "
        "start; without it: stop after S seconds",
    )


def _fail(message: str) -> int:
    print(f"actorflow receive: error: {message}", file=sys.stderr, flush=True)
    return 1


def main(args: argparse.Namespace) -> int:
    """Run `receive` with parsed arguments; return the exit code."""
    if args.expect is not None and args.expect < 0:
        return _fail("--expect must be 0 or more")
    if args.timeout is not None and args.timeout < 0:
        return _fail("--timeout must be 0 or more")
    try:
        host, port = parse_address(args.listen, default_host="0.0.0.0")
    except ValueError as exc:
        return _fail(f"--listen: {exc}")
    writer: _Writer | None = None
    if not args.no_write:
        try:
            writer = _Writer(args.output, args.framed)
        except OSError as exc:
            return _fail(f"cannot open {args.output}: {exc.strerror or exc}")
    receiver = Receiver(
        host, port, framed=args.framed, sink=writer, tick=writer.tick if writer else None
    )
    try:
        bound = receiver.bind()
    except OSError as exc:
        if writer is not None:
            writer.close()
        return _fail(f"cannot listen on {format_address(host, port)}: {exc.strerror or exc}")
    print(f"listening on {format_address(*bound)}", file=sys.stderr, flush=True)

    signalled = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal signalled
        signalled = True
        receiver.request_stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    deadline = None if args.timeout is None else started + args.timeout
    expect = args.expect

    def until() -> bool:
        if expect is not None and receiver.messages >= expect:
            return True
        return deadline is not None and time.monotonic() >= deadline

    failure = None
    try:
        receiver.serve(until)
    except OSError as exc:
        failure = f"cannot write {args.output}: {exc.strerror or exc}"
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                failure = failure or f"cannot write {args.output}: {exc.strerror or exc}"
    summary_to = sys.stderr if writer is not None and args.output == "-" else sys.stdout
    print(json.dumps(receiver.summary()), file=summary_to, flush=True)
    if failure is not None:
        return _fail(failure)
    if expect is not None and receiver.messages < expect and not signalled:
        return _fail(f"received {receiver.messages} of {expect} messages within {args.timeout:g} s")
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorflow receive", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
