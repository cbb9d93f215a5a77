"""The connector-script side of a connector sink: it listens, the workers' sinks connect.

Two ways to take the outputs:

- ``serve(commit, committed)``, exactly once: ``committed(sink)`` returns the last
  checkpoint the script's own durable log holds for that sink (0: none), and
  ``commit(sink, checkpoint, outputs)`` applies one checkpoint's outputs together with
  its log entry, atomically (one database transaction, say). A checkpoint at or below
  what the log holds is skipped, so a worker that resends after a crash, rollback or
  restart changes nothing twice.
- ``read()``, Wallaroo's: one decoded output at a time; a checkpoint's outputs are
  confirmed once the script asks for the next one after them, and what it confirmed is
  kept in memory only (at least once across a restart of the script itself).
"""

from __future__ import annotations

import logging
import select
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from actorflow.connectors import protocol as p
from actorflow.connectors.client import check_cookie, find_config, parse_connector_args

log = logging.getLogger("actorflow.connector")

Commit = Callable[[str, int, list], None]
Committed = Callable[[str], int]


class _Peer:
    def __init__(self, sock: socket.socket, limit: int) -> None:
        self.sock = sock
        self.splitter = p.FrameSplitter(limit)
        self.sink: str | None = None


class SinkConnector:
    """Receives a connector sink's committed outputs."""

    def __init__(
        self,
        args: Sequence[str] | None = None,
        required_params: Sequence[str] = (),
        optional_params: Sequence[str] = (),
    ) -> None:
        self.args = list(sys.argv[1:] if args is None else args)
        self.params = parse_connector_args(self.args, required_params, optional_params)
        self.config = find_config(self.args, self.params, sink=True)
        dec = self.config.decoder
        self._decode = dec.func if dec is not None else (lambda b: b)
        self._acceptor: socket.socket | None = None
        self._peers: dict[int, _Peer] = {}
        self._known: dict[str, int] = {}  # last checkpoint committed, per sink
        self._queue: deque = deque()  # read(): outputs handed out one by one
        self._confirm: list[tuple[_Peer, int]] = []  # owed once the queue is read past
        self.limit = 64 * 1024 * 1024
        self.stopped = False

    def listen(self, host: str | None = None, port: int | None = None, backlog: int = 16) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or self.config.host, int(port or self.config.port)))
        sock.listen(backlog)
        self._acceptor = sock

    # ---- exactly once ---------------------------------------------------------

    def serve(self, commit: Commit, committed: Committed) -> None:
        """Apply each checkpoint's outputs with ``commit`` until ``stop()``."""
        while not self.stopped:
            for peer, kind, body in self._poll(0.2):
                self._take(peer, kind, body, commit, committed)

    def stop(self) -> None:
        self.stopped = True

    # ---- Wallaroo's read() -------------------------------------------------------

    def read(self, timeout: float | None = None) -> Any:
        """The next output (None after ``timeout`` seconds without one)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._queue:
            for peer, checkpoint in self._confirm:
                self._send(peer, p.control(p.COMMITTED, {"checkpoint": checkpoint}))
            self._confirm = []
            left = 0.2 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            for peer, kind, body in self._poll(min(left, 0.2)):
                self._take(peer, kind, body, self._enqueue, self._known.get)
        return self._queue.popleft()

    def _enqueue(self, sink: str, checkpoint: int, outputs: list) -> None:
        self._queue.extend(outputs)

    # ---- the connections -----------------------------------------------------------

    def _take(self, peer: _Peer, kind: int, body: bytes, commit: Any, committed: Any) -> None:
        if kind == p.SINK_HELLO:
            msg = p.parse_control(body)
            if not check_cookie(self.config.cookie, msg.get("cookie", "")):
                self._send(peer, p.control(p.ERROR, {"message": "wrong cookie"}))
                self._drop(peer)
                return
            peer.sink = str(msg.get("sink", ""))
            done = int(committed(peer.sink) or 0)
            self._known[peer.sink] = max(self._known.get(peer.sink, 0), done)
            self._send(peer, p.control(p.SINK_OK, {"committed": self._known[peer.sink]}))
        elif kind == p.COMMIT and peer.sink is not None:
            checkpoint, outputs = p.parse_commit(body)
            if checkpoint > self._known.get(peer.sink, 0):
                commit(peer.sink, checkpoint, [self._decode(o) for o in outputs])
                self._known[peer.sink] = checkpoint
            if commit == self._enqueue and self._queue:
                self._confirm.append((peer, checkpoint))
            else:
                self._send(peer, p.control(p.COMMITTED, {"checkpoint": checkpoint}))
        else:
            log.error("sink connector: unexpected frame %d; closing the connection", kind)
            self._drop(peer)

    def _poll(self, timeout: float) -> list[tuple[_Peer, int, bytes]]:
        if self._acceptor is None:
            self.listen()
        assert self._acceptor is not None
        fds = [self._acceptor] + [peer.sock for peer in self._peers.values()]
        ready, _, _ = select.select(fds, [], [], timeout)
        out = []
        for sock in ready:
            if sock is self._acceptor:
                conn, _ = sock.accept()
                self._peers[conn.fileno()] = _Peer(conn, self.limit)
                continue
            peer = self._peers.get(sock.fileno())
            if peer is None:
                continue
            try:
                data = sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                self._drop(peer)
                continue
            try:
                out.extend((peer, kind, body) for kind, body in peer.splitter.feed(data))
            except p.ProtocolError as exc:
                log.error("sink connector: %s; closing the connection", exc)
                self._drop(peer)
        return out

    def _send(self, peer: _Peer, data: bytes) -> None:
        try:
            peer.sock.sendall(data)
        except OSError:
            self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        self._peers.pop(peer.sock.fileno(), None)
        peer.sock.close()

    def close(self) -> None:
        for peer in list(self._peers.values()):
            self._drop(peer)
        if self._acceptor is not None:
            self._acceptor.close()
            self._acceptor = None
