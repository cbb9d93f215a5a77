"""Send a file of messages to a TCP source as fast as possible, like Wallaroo's giles sender.

Load tests and end-to-end tests need a sender whose own cost is negligible next to the
system under test. The file is loaded once into a list of ready frames; each batch is
one `b"".join` and one `sendall`, so on loopback the sender is limited by the reader,
not by itself. The sender waits for its target to come up (workers start slowly), and
ends with one JSON summary line on stdout for scripts to parse.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from actorflow.errors import ActorflowError
from actorflow.security import find_secret, stream_proof
from actorflow.tools.framing import FrameReader, format_address, frame, parse_address
from actorflow.wire import control_frame, read_control

PROGRESS_EVERY = 0.5  # seconds between progress callbacks

ProgressFn = Callable[[int, int, float], None]  # (messages, bytes, seconds)


class SendError(ActorflowError):
    """The sender could not load its file, reach its target, or keep sending."""


def load_frames(path: str, mode: str) -> list[bytes]:
    """Load `path` as ready-to-send frames; mode "framed" keeps frames, "newlines" frames lines
    (each line without its line end; blank lines are skipped, as Wallaroo's sender did).

    Raises SendError if the file cannot be read or (framed) ends inside a frame.
    """
    if mode not in ("framed", "newlines"):
        raise ValueError(f"mode must be 'framed' or 'newlines', not {mode!r}")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SendError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if mode == "framed":
        reader = FrameReader(max_frame=1 << 32)  # no limit: the file's size is the limit
        payloads = reader.feed(data)
        if reader.pending:
            raise SendError(
                f"{path} is not a whole number of frames: the frame at byte offset "
                f"{len(data) - reader.pending} runs past the end of the file "
                f"({len(data)} bytes); is it really --framed?"
            )
        return [frame(p) for p in payloads]
    lines = (line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n"))
    return [frame(line) for line in lines if line]  # blank lines are skipped, as Giles did


def connect(
    host: str,
    port: int,
    timeout: float = 10.0,
    *,
    log: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> socket.socket:
    """Connect to host:port, retrying with back-off for up to `timeout` seconds.

    Calls `log` once with a "waiting for" message on the first failed attempt. Raises
    SendError naming the address when the time is up (or `stop` is set).
    """
    address = format_address(host, port)
    deadline = time.monotonic() + timeout
    delay = 0.02
    waited = False
    while True:
        try:
            attempt_timeout = max(deadline - time.monotonic(), 0.5)
            sock = socket.create_connection((host, port), timeout=attempt_timeout)
        except socket.gaierror as exc:
            raise SendError(f"cannot resolve host of {address}: {exc.strerror}") from exc
        except OSError as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (stop is not None and stop.is_set()):
                raise SendError(
                    f"could not connect to {address} within {timeout:g} s: {exc.strerror or exc}"
                ) from exc
            if not waited and log is not None:
                log(f"waiting for {address} to accept connections (up to {timeout:g} s)")
            waited = True
            if stop is not None:
                stop.wait(min(delay, remaining))
            else:
                time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.5)
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


def _cyclic_slice(frames: list[bytes], start: int, count: int) -> list[bytes]:
    """Return `count` frames starting at `start`, wrapping around the list as often as needed."""
    n = len(frames)
    out = frames[start:]
    count -= n - start
    while count >= n:
        out += frames
        count -= n
    out += frames[:count]
    return out


def _stderr_log(message: str) -> None:
    print(f"actorflow send: {message}", file=sys.stderr, flush=True)


def send(
    host: str,
    port: int,
    frames: list[bytes],
    *,
    messages: int | None = None,
    batch_size: int = 500,
    interval_ms: float = 0.0,
    repeat: bool = False,
    connect_timeout: float = 10.0,
    progress: ProgressFn | None = None,
    log: Callable[[str], None] | None = _stderr_log,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Send `frames` to host:port in batches; return {"messages", "bytes", "seconds", "rate"}.

    Without `repeat` the frames are sent once (at most `messages` of them); with it they
    are sent in a loop until `messages` have gone, or forever when `messages` is None.
    Setting `stop` ends the run early between batches. `progress(messages, bytes, seconds)`
    is called about every 0.5 s and once at the end. Raises SendError on connection loss.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    if messages is not None and messages < 0:
        raise ValueError("messages must be 0 or more")
    if interval_ms < 0:
        raise ValueError("interval_ms must be 0 or more")
    nframes = len(frames)
    if repeat:
        if nframes == 0 and messages != 0:
            raise SendError("there are no messages to repeat")
        total = messages
    else:
        total = nframes if messages is None else min(messages, nframes)
    address = format_address(host, port)
    pause = interval_ms / 1000.0

    sock = connect(host, port, connect_timeout, log=log, stop=stop)
    sent = 0
    nbytes = 0
    pos = 0
    join = b"".join
    sendall = sock.sendall
    monotonic = time.monotonic
    start = monotonic()
    next_progress = start + PROGRESS_EVERY
    try:
        while total is None or sent < total:
            if stop is not None and stop.is_set():
                break
            count = batch_size if total is None else min(batch_size, total - sent)
            end = pos + count
            if end <= nframes:
                chunk = join(frames[pos:end])
                pos = 0 if end == nframes else end
            else:
                chunk = join(_cyclic_slice(frames, pos, count))
                pos = end % nframes
            try:
                sendall(chunk)
            except OSError as exc:
                raise SendError(
                    f"connection to {address} lost after {sent} messages: {exc.strerror or exc}"
                ) from exc
            sent += count
            nbytes += len(chunk)
            if pause and (total is None or sent < total):
                if stop is not None:
                    stop.wait(pause)
                else:
                    time.sleep(pause)
            if progress is not None:
                now = monotonic()
                if now >= next_progress:
                    progress(sent, nbytes, now - start)
                    next_progress = now + PROGRESS_EVERY
        seconds = monotonic() - start
    finally:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()
    if progress is not None:
        progress(sent, nbytes, seconds)
    return {
        "messages": sent,
        "bytes": nbytes,
        "seconds": round(seconds, 6),
        "rate": round(sent / seconds, 1) if seconds > 0 else 0.0,
    }


def _read_controls(sock: socket.socket, buf: bytearray, wait: float) -> list[dict[str, Any]]:
    """Read what the source sent (waiting up to `wait` seconds for something) and return
    the complete control frames in it; raises OSError/SendError on a lost connection."""
    ready, _, _ = select.select([sock], [], [], wait)
    if ready:
        data = sock.recv(65536)
        if not data:
            raise SendError("the source closed the connection")
        buf += data
    return _controls(buf)


def _controls(buf: bytearray) -> list[dict[str, Any]]:
    """The complete control frames at the front of ``buf``, taken out of it."""
    out = []
    while buf:
        try:
            message, end = read_control(bytes(buf))
        except ValueError as exc:
            raise SendError(f"the source sent something unexpected: {exc}") from None
        if message is None:
            break
        del buf[:end]
        out.append(message)
    return out


def _last_words(sock: socket.socket, buf: bytearray) -> str | None:
    """Where a source that reset the connection said the stream moves, if it did: a
    leaving worker's source sends that notice, then closes with our data unread, and
    the reset can reach a blocked write first. What came before the reset is still
    readable."""
    try:
        sock.setblocking(False)
        while data := sock.recv(65536):
            buf += data
    except OSError:
        pass
    try:
        moved = [m["moved"] for m in _controls(buf) if "moved" in m]
    except SendError:
        return None
    return str(moved[-1]) if moved else None


class _Moved(Exception):
    """The source told the sender that its stream continues at ``address``."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


def send_acked(
    host: str,
    port: int,
    frames: list[bytes],
    *,
    stream: str,
    batch_size: int = 500,
    interval_ms: float = 0.0,
    patience: float = 120.0,
    log: Callable[[str], None] | None = _stderr_log,
    stop: threading.Event | None = None,
    progress: ProgressFn | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    """Send `frames` as the replayable stream `stream` (see actorflow.wire): say hello,
    send from where the source says to resume, and finish once the source acknowledges
    that a completed checkpoint covers every message. After a lost connection (a worker
    restarted, the cluster rolled back) reconnect and resume, for up to `patience`
    seconds without progress. `token` proves the claim to the stream in an authenticated
    cluster (default: derived from $ACTORFLOW_CLUSTER_SECRET, if set). Returns the
    summary, with "acked" and "reconnects"."""
    if token is None:
        secret = find_secret(None, None)
        token = secret.stream_token(stream) if secret is not None else None
    total = len(frames)
    acked = 0
    sent_total = 0
    reconnects = 0
    started = time.monotonic()
    last_progress = started
    while acked < total:
        if stop is not None and stop.is_set():
            break
        try:
            remaining = max(patience - (time.monotonic() - last_progress), 0.5)
            sock = connect(host, port, remaining, log=log, stop=stop)
        except SendError:
            raise SendError(
                f"no progress for {patience:g} s: {format_address(host, port)} does not "
                f"accept connections ({acked} of {total} messages acknowledged)"
            ) from None
        buf = bytearray()
        sock.settimeout(min(patience, 10.0))  # a blocked write counts as a lost connection
        try:
            sock.sendall(control_frame({"hello": 1, "stream": stream}))
            resume = None
            deadline = time.monotonic() + 30
            while resume is None:
                if time.monotonic() > deadline:
                    raise SendError("the source did not answer the hello")
                for message in _read_controls(sock, buf, 1.0):
                    if "moved" in message:
                        raise _Moved(str(message["moved"]))
                    if "error" in message:
                        raise SendError(f"the source refused stream {stream!r}: {message['error']}")
                    if "challenge" in message:
                        if token is None:
                            raise SendError(
                                f"the source refused stream {stream!r}: the cluster asks for "
                                "the stream's token (--stream-token, or the cluster secret)"
                            )
                        proof = stream_proof(token, stream, str(message["challenge"]))
                        sock.sendall(control_frame({"proof": proof}))
                    if "resume" in message:
                        resume = int(message["resume"])
                        acked = max(acked, min(int(message.get("ack", 0)), total))
            pos = min(resume, total)
            while acked < total:
                if pos < total and not (stop is not None and stop.is_set()):
                    chunk = frames[pos : pos + batch_size]
                    sock.sendall(b"".join(chunk))
                    pos += len(chunk)
                    sent_total += len(chunk)
                    if interval_ms > 0:
                        time.sleep(interval_ms / 1000)
                    wait = 0.0
                else:
                    wait = 1.0
                for message in _read_controls(sock, buf, wait):
                    if "moved" in message:
                        raise _Moved(str(message["moved"]))
                    if "ack" in message and int(message["ack"]) > acked:
                        acked = int(message["ack"])
                        last_progress = time.monotonic()
                if progress is not None:
                    progress(pos, 0, time.monotonic() - started)
                if stop is not None and stop.is_set() and pos >= total:
                    break
                if time.monotonic() - last_progress > patience:
                    raise SendError(
                        f"no acknowledgement for {patience:g} s "
                        f"({acked} of {total} messages acknowledged)"
                    )
        except _Moved as moved:
            # The worker of this source leaves the cluster (actorflow shrink): its
            # streams continue on the source it names, from where that one says.
            new_host, _, new_port = moved.address.rpartition(":")
            if log is not None:
                log(
                    f"stream {stream!r} moves from {format_address(host, port)} to "
                    f"{moved.address}; {acked} of {total} acknowledged"
                )
            host, port = new_host, int(new_port)
            reconnects += 1
            continue
        except (OSError, SendError) as exc:
            if isinstance(exc, SendError) and "refused stream" in str(exc):
                raise
            if isinstance(exc, SendError) and str(exc).startswith("no acknowledgement"):
                raise
            moved_to = _last_words(sock, buf)
            if moved_to:  # the leaving source's notice came just before its reset
                if log is not None:
                    log(f"stream {stream!r} moves from {format_address(host, port)} to {moved_to}")
                new_host, _, new_port = moved_to.rpartition(":")
                host, port = new_host, int(new_port)
                reconnects += 1
                continue
            reconnects += 1
            if log is not None:
                log(
                    f"connection to {format_address(host, port)} lost ({exc}); "
                    f"{acked} of {total} acknowledged; reconnecting"
                )
            time.sleep(0.1)
            continue
        finally:
            sock.close()
    seconds = time.monotonic() - started
    return {
        "messages": total,
        "acked": acked,
        "sent": sent_total,
        "reconnects": reconnects,
        "seconds": round(seconds, 6),
        "rate": round(total / seconds, 1) if seconds > 0 else 0.0,
    }


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the `send` flags to `p`."""
    p.add_argument(
        "--host", required=True, metavar="H:P", help="address of the TCP source to send to"
    )
    p.add_argument("--file", required=True, metavar="F", help="file of messages to send")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--framed",
        dest="mode",
        action="store_const",
        const="framed",
        help="the file holds 4-byte big-endian length-prefixed frames",
    )
    mode.add_argument(
        "--newlines",
        dest="mode",
        action="store_const",
        const="newlines",
        help="each line of the file (without its newline) is one message; blank lines are skipped",
    )
    p.add_argument(
        "--messages",
        type=int,
        default=None,
        metavar="N",
        help="stop after N messages (default: every message in the file once)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=500,
        metavar="B",
        help="messages per socket write (default: 500)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=0.0,
        metavar="MS",
        help="pause between batches in milliseconds (default: 0)",
    )
    p.add_argument(
        "--repeat",
        action="store_true",
        help="loop over the file until --messages are sent (forever without it)",
    )
    p.add_argument(
        "--acked",
        action="store_true",
        help="replayable mode: resume after reconnects where the cluster says, and finish "
        "once a completed checkpoint covers every message",
    )
    p.add_argument(
        "--stream",
        metavar="NAME",
        help="with --acked: the stream's name, unique per sender (default: the file name)",
    )
    p.add_argument(
        "--stream-token",
        metavar="T",
        default=os.environ.get("ACTORFLOW_STREAM_TOKEN"),
        help="with --acked: the token that lets this sender claim its stream (actorflow token "
        "prints it; default: $ACTORFLOW_STREAM_TOKEN, else derived from the cluster secret: "
        "--cluster-secret-file, $ACTORFLOW_CLUSTER_SECRET, or actorflow.secret in "
        "--resilience-dir)",
    )
    p.add_argument("--cluster-secret-file", metavar="F", help="with --acked: see --stream-token")
    p.add_argument(
        "--resilience-dir", default="/tmp", help="with --acked: where to find actorflow.secret"
    )
    p.add_argument(
        "--patience",
        type=float,
        default=120.0,
        metavar="S",
        help="with --acked: give up after S seconds without progress (default: 120)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="keep retrying the connection for S seconds (default: 10)",
    )


def _fail(message: str) -> int:
    print(f"actorflow send: error: {message}", file=sys.stderr, flush=True)
    return 1


def _tty_progress(messages: int, nbytes: int, seconds: float) -> None:
    rate = messages / seconds if seconds > 0 else 0.0
    sys.stderr.write(f"\rsent {messages:,} messages ({rate:,.0f} msg/s)   ")
    sys.stderr.flush()


def main(args: argparse.Namespace) -> int:
    """Run `send` with parsed arguments; return the exit code."""
    if args.messages is not None and args.messages < 0:
        return _fail("--messages must be 0 or more")
    if args.batch_size < 1:
        return _fail("--batch-size must be at least 1")
    if args.interval < 0:
        return _fail("--interval must be 0 or more")
    try:
        host, port = parse_address(args.host)
    except ValueError as exc:
        return _fail(f"--host: {exc}")
    try:
        frames = load_frames(args.file, args.mode)
    except SendError as exc:
        return _fail(str(exc))
    if not args.repeat and args.messages is not None and args.messages > len(frames):
        _stderr_log(
            f"{args.file} holds only {len(frames)} messages; sending those once "
            "(add --repeat to loop over the file)"
        )
    if args.repeat:
        expected = args.messages  # None: until interrupted
    else:
        expected = len(frames) if args.messages is None else min(args.messages, len(frames))

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()
        signal.signal(signum, signal.default_int_handler)  # a second signal interrupts

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = sys.stderr.isatty()
    try:
        if args.acked:
            if args.repeat and args.messages is None:
                return _fail("--acked needs an end: give --messages with --repeat")
            if args.messages is not None:
                frames = (
                    _cyclic_slice(frames, 0, args.messages)
                    if args.repeat
                    else (frames[: args.messages])
                )
            stream = args.stream or os.path.basename(args.file)
            token = args.stream_token
            if token is None:
                secret = find_secret(args.cluster_secret_file, args.resilience_dir)
                token = secret.stream_token(stream) if secret is not None else None
            summary = send_acked(
                host,
                port,
                frames,
                stream=stream,
                token=token,
                batch_size=args.batch_size,
                interval_ms=args.interval,
                patience=args.patience,
                progress=_tty_progress if tty else None,
                stop=stop,
            )
        else:
            summary = send(
                host,
                port,
                frames,
                messages=args.messages,
                batch_size=args.batch_size,
                interval_ms=args.interval,
                repeat=args.repeat,
                connect_timeout=args.connect_timeout,
                progress=_tty_progress if tty else None,
                stop=stop,
            )
    except (SendError, ActorflowError) as exc:
        if tty:
            sys.stderr.write("\n")
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if tty:
        sys.stderr.write("\n")
    print(json.dumps(summary), flush=True)
    if expected is not None and summary["messages"] < expected:
        return _fail(f"interrupted after {summary['messages']} of {expected} messages")
    return 0


def _standalone(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actorflow send", description=__doc__.splitlines()[0])
    configure_parser(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(_standalone())
