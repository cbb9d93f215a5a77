"""The connector-script side: ``SourceConnector`` and ``SinkConnector``.

A script is started beside a worker as Wallaroo's were::

    python -m actorflow.connectors.redis_source --application-module myapp \\
        --connector NAME --NAME-topic t [the app's own flags, e.g. --in ...]

It loads the app (``application_setup`` with the same command line) to find the
connector config named NAME, its encoder or decoder, host, port and cookie.
``SourceConnector.write`` keeps every message until a completed checkpoint covers it,
so a crashed, rolled-back or restarted worker loses nothing: the connector reconnects
by itself and resends from the point the source names.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from actorflow.connectors import protocol as p
from actorflow.loader import load_application

log = logging.getLogger("actorflow.connector")

FLUSH_BYTES = 64 * 1024
UNSENT_LIMIT = 10_000  # messages a write() may queue beyond the credits before it blocks
RETRY = 0.1
_PLAIN = p.MESSAGE_HEAD  # a MESSAGE's header; without a key its key length is NO_KEY


def parse_connector_args(
    args: Sequence[str], required_params: Sequence[str] = (), optional_params: Sequence[str] = ()
) -> argparse.Namespace:
    """``--application-module``, ``--connector NAME`` and ``--NAME-<param> value``."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--connector", dest="connector_name")
    prefix = first.parse_known_args(list(args))[0].connector_name or "CONNECTOR_NAME"
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--application-module", dest="application", required=True)
    parser.add_argument("--connector", dest="connector_name", required=True)
    for key in required_params:
        parser.add_argument(f"--{prefix}-{key}", dest=key, required=True)
    for key in optional_params:
        parser.add_argument(f"--{prefix}-{key}", dest=key)
    return parser.parse_known_args(list(args))[0]


def find_config(args: Sequence[str], params: argparse.Namespace, sink: bool) -> Any:
    """The app's connector config named ``params.connector_name``."""
    from actorflow.experimental import SinkConnectorConfig, SourceConnectorConfig

    app = load_application(params.application, list(args))
    for stage in app.stages:
        if sink and stage.kind == "sink":
            for cfg in stage.spec:
                if isinstance(cfg, SinkConnectorConfig) and cfg.connector == params.connector_name:
                    return cfg
        elif not sink and stage.kind == "source":
            cfg = stage.spec[1]
            if isinstance(cfg, SourceConnectorConfig) and cfg.name == params.connector_name:
                return cfg
    what = "sink" if sink else "source"
    raise RuntimeError(f"the app has no {what} connector named {params.connector_name!r}")


class SourceConnector:
    """Sends messages to a connector source; at least once across worker failures."""

    def __init__(
        self,
        args: Sequence[str] | None = None,
        required_params: Sequence[str] = (),
        optional_params: Sequence[str] = (),
        stream: str | None = None,
    ) -> None:
        self.args = list(sys.argv[1:] if args is None else args)
        self.params = parse_connector_args(self.args, required_params, optional_params)
        cfg = find_config(self.args, self.params, sink=False)
        self.config = cfg
        self._encode = cfg.encoder.func if cfg.encoder is not None else (lambda m: m)
        self.stream_name = stream or self.params.connector_name
        self.stream_id = 1
        self.resume_point = 0  # the first NOTIFY_ACK's point: a replayable source starts here
        self.acked_point = 0
        self.on_acked: Callable[[int], None] | None = None  # called with each new ack point
        self.count = 0
        self._last_id = 0
        self._unacked: deque[tuple[int, bytes]] = deque()
        self._cursor = 0  # index in _unacked of the next message to send on this connection
        self._credits = 0
        self._out = bytearray()
        self._sock: socket.socket | None = None
        self._cond = threading.Condition()
        self._closed = False
        self._error: str | None = None
        self._thread: threading.Thread | None = None
        self.connects = 0

    # ---- the script's side ------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        """Connect (retrying until the source listens) and open the stream."""
        self._thread = threading.Thread(target=self._run, name="connector", daemon=True)
        self._thread.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self.connects and self._error is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError("the connector source did not answer")
                self._cond.wait(left)
            if self._error is not None:
                from actorflow.experimental import ConnectorError

                raise ConnectorError(self._error)

    def write(
        self,
        message: Any,
        event_time: int = 0,
        key: bytes | str | None = None,
        point_of_ref: int | None = None,
    ) -> None:
        """Send one message: encoded with the app's encoder, held until acknowledged.
        ``point_of_ref`` (increasing) names its place in a replayable source; writes at
        or below the point the source resumed from are skipped."""
        payload = self._encode(message)
        if type(payload) is not bytes:
            payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        mid = self._last_id + 1 if point_of_ref is None else int(point_of_ref)
        if mid <= self._last_id:
            return
        self._last_id = mid
        if type(event_time) is not int:
            if hasattr(event_time, "timestamp"):  # a datetime
                event_time = int(event_time.timestamp() * 1e9)  # type: ignore[union-attr]
            event_time = int(event_time)
        if key is None:  # the common case in one pack
            head = _PLAIN.pack(
                len(payload) + 27, p.MESSAGE, self.stream_id, mid, event_time, p.NO_KEY
            )
            frame = head + payload
        else:
            k = key.encode() if isinstance(key, str) else bytes(key)
            frame = p.message(self.stream_id, mid, payload, event_time, k)
        with self._cond:
            unacked = self._unacked
            if len(unacked) - self._cursor >= UNSENT_LIMIT:
                while len(unacked) - self._cursor >= UNSENT_LIMIT and not self._closed:
                    self._cond.wait(0.5)
            unacked.append((mid, frame))
            self.count += 1
            if self._credits > 0 and self._cursor == len(unacked) - 1 and self._sock is not None:
                self._out += frame  # nothing queued before it: straight out
                self._cursor += 1
                self._credits -= 1
                if len(self._out) >= FLUSH_BYTES or not self._credits:
                    self._flush()
            else:
                self._pump()

    @property
    def last_id(self) -> int:
        """The message id of the last write (the next write without a point gets +1)."""
        return self._last_id

    def flush(self) -> None:
        with self._cond:
            self._flush()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until everything written is acknowledged; True if it was."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._unacked:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(0.1 if left is None else min(left, 0.1))
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._flush()
            if self._sock is not None:
                self._sock.close()
            self._cond.notify_all()

    # ---- the connection (a thread of its own) ------------------------------

    def _pump(self) -> None:
        """Send what the credits allow (with the lock held)."""
        if self._sock is None:
            return
        while self._credits > 0 and self._cursor < len(self._unacked):
            self._out += self._unacked[self._cursor][1]
            self._cursor += 1
            self._credits -= 1
        if len(self._out) >= FLUSH_BYTES or (self._out and self._credits == 0):
            self._flush()

    def _flush(self) -> None:
        if self._sock is not None and self._out:
            try:
                self._sock.sendall(self._out)
            except OSError:
                pass  # the reader notices the closed connection
            self._out.clear()

    def _run(self) -> None:
        cfg = self.config
        while not self._closed:
            try:
                sock = socket.create_connection((cfg.host, cfg.port), timeout=5)
            except OSError:
                time.sleep(RETRY)
                continue
            try:
                self._session(sock)
            except (OSError, p.ProtocolError) as exc:
                log.info("connector %s: connection lost (%s); reconnecting", self.stream_name, exc)
            finally:
                with self._cond:
                    self._sock = None
                    self._out.clear()
                sock.close()
            if self._error is not None:
                return
            time.sleep(RETRY)

    def _session(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        hello = {
            "version": p.VERSION,
            "cookie": self.config.cookie,
            "program_name": "actorflow-connector",
            "instance_name": self.stream_name,
        }
        notify = {
            "stream_id": self.stream_id,
            "stream_name": self.stream_name,
            "point_of_ref": self.acked_point,
        }
        sock.sendall(p.control(p.HELLO, hello) + p.control(p.NOTIFY, notify))
        sock.settimeout(None)
        splitter = p.FrameSplitter(max(self.config.max_frame_size, p.MAX_CONTROL) + 64)
        opened = False
        while not self._closed:
            ready, _, _ = select.select([sock], [], [], 0.002)
            if not ready:
                if opened:
                    with self._cond:
                        self._flush()
                continue
            data = sock.recv(65536)
            if not data:
                raise OSError("closed by the source")
            for kind, body in splitter.feed(data):
                opened = self._handle(sock, kind, body) or opened

    def _handle(self, sock: socket.socket, kind: int, body: bytes) -> bool:
        msg = p.parse_control(body)
        with self._cond:
            if kind == p.OK:
                self._credits = int(msg.get("credits", 0))
            elif kind == p.ERROR:
                if not self.connects:
                    self._error = str(msg.get("message", "refused"))
                    self._cond.notify_all()
                raise p.ProtocolError(f"the source refused: {msg.get('message')}")
            elif kind == p.NOTIFY_ACK:
                if not msg.get("success", False):
                    raise p.ProtocolError("the source refused the stream")
                point = int(msg.get("point_of_ref", 0))
                self._cursor = sum(1 for mid, _ in self._unacked if mid <= point)
                if not self.connects:
                    self.resume_point = max(point, self.acked_point)
                    self._last_id = max(self._last_id, point)
                self.connects += 1
                self._sock = sock
                self._pump()
                self._flush()
                self._cond.notify_all()
                return True
            elif kind == p.ACK:
                self._credits += int(msg.get("credits", 0))
                for _sid, point in msg.get("acks", []):
                    self._acked(int(point))
                self._pump()
                self._cond.notify_all()
            else:
                raise p.ProtocolError(f"unexpected frame type {kind} from the source")
        return False

    def _acked(self, point: int) -> None:
        if point <= self.acked_point:
            return
        self.acked_point = point
        while self._unacked and self._unacked[0][0] <= point:
            self._unacked.popleft()
            self._cursor = max(self._cursor - 1, 0)
        if self.on_acked is not None:
            try:
                self.on_acked(point)
            except Exception:
                log.exception("connector %s: on_acked failed", self.stream_name)


def check_cookie(expected: str, given: Any) -> bool:
    return hmac.compare_digest(str(expected).encode(), str(given).encode())
