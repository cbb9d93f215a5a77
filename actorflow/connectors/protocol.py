"""The connector protocols' frames: shared by the worker's actors and the connector scripts.

Every frame is ``u32 big-endian length | u8 type | body``; control bodies are UTF-8 JSON
objects, a data message is binary. Nothing is ever unpickled: a connector is an
external client, like a sender.

Source protocol (at least once; the semantics of Wallaroo's v2 connector protocol):

1. connector → source ``HELLO {"version", "cookie", "program_name", "instance_name"}``;
   a wrong cookie gets ``ERROR`` and the connection is closed. Otherwise ``OK
   {"credits": N}``: the connector may send N messages.
2. ``NOTIFY {"stream_id", "stream_name", "point_of_ref"}`` opens a stream; the source
   answers ``NOTIFY_ACK {"success", "stream_id", "point_of_ref"}``, the point from which
   to (re)send: messages with a message id at or below it are already in the cluster.
3. ``MESSAGE``: stream id, message id (the point of reference after it), event time in
   ns (0: none, ingest time), an optional key and the payload the app's decoder takes.
4. The source answers ``ACK {"credits": C, "acks": [[stream_id, point_of_ref], ...]}``:
   C more messages may be sent (when the pipeline keeps up: back-pressure), and each
   stream up to its point of reference is covered by a completed checkpoint and will
   never be asked for again.
5. After a crash, rollback or restart the connection closes; the connector says hello
   again, notifies its streams and resends from the point each NOTIFY_ACK names.

Sink protocol (two-phase commit tied to checkpoints):

1. the sink (a worker) connects to the connector and says ``SINK_HELLO {"cookie",
   "sink"}``; the connector answers ``SINK_OK {"committed": C}``, the last checkpoint it
   committed for that sink (from its own durable log), or ``ERROR``.
2. Phase one happens in the worker: at a checkpoint's barrier the sink writes the
   outputs since the previous barrier into its checkpoint files. Phase two: once that
   checkpoint completes, ``COMMIT`` carries them (u64 checkpoint, then the app's
   encoded outputs, each length-prefixed); the connector applies them with its log
   entry atomically, skipping a checkpoint at or below C, and answers ``COMMITTED
   {"checkpoint"}``. A sink restored from checkpoint R resends what R covers and the
   connector has not confirmed, so each output is committed exactly once.
"""

from __future__ import annotations

import json
import struct
from typing import Any

HELLO, NOTIFY, MESSAGE, EOS = 1, 2, 3, 4
OK, ERROR, NOTIFY_ACK, ACK = 11, 12, 13, 14
SINK_HELLO, SINK_OK, COMMIT, COMMITTED = 21, 22, 23, 24

VERSION = "actorflow-connector-1"
MAX_CONTROL = 64 * 1024
NO_KEY = 0xFFFF

_HEAD = struct.Struct(">IB")
_MSG = struct.Struct(">QQqH")
FRAME_HEAD = _HEAD  # length, type
MESSAGE_HEAD = struct.Struct(">IBQQqH")  # length, type, then a MESSAGE's fixed fields
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something this protocol does not allow."""


def control(kind: int, body: dict[str, Any]) -> bytes:
    """A control frame of ``kind`` carrying ``body`` as JSON."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return _HEAD.pack(len(data) + 1, kind) + data


def message(
    stream_id: int, message_id: int, payload: bytes, event_time: int = 0, key: bytes | None = None
) -> bytes:
    """A MESSAGE frame."""
    k = b"" if key is None else key
    body = _MSG.pack(stream_id, message_id, event_time, NO_KEY if key is None else len(k))
    return _HEAD.pack(len(body) + len(k) + len(payload) + 1, MESSAGE) + body + k + payload


def parse_message(body: bytes) -> tuple[int, int, int, bytes | None, bytes]:
    """(stream id, message id, event time, key, payload) of a MESSAGE body."""
    if len(body) < _MSG.size:
        raise ProtocolError("a MESSAGE frame too short for its header")
    stream_id, message_id, event_time, klen = _MSG.unpack_from(body)
    pos = _MSG.size
    key = None
    if klen != NO_KEY:
        key = body[pos : pos + klen]
        pos += klen
    return stream_id, message_id, event_time, key, body[pos:]


def commit(checkpoint: int, frames: bytes) -> bytes:
    """A COMMIT frame: the checkpoint's number, then the length-prefixed outputs."""
    return _HEAD.pack(len(frames) + 9, COMMIT) + _U64.pack(checkpoint) + frames


def parse_commit(body: bytes) -> tuple[int, list[bytes]]:
    (checkpoint,) = _U64.unpack_from(body)
    return checkpoint, split_outputs(body, 8)


def output_frame(data: bytes) -> bytes:
    """One encoded output as a COMMIT carries it."""
    return _U32.pack(len(data)) + data


def split_outputs(buf: bytes, pos: int = 0) -> list[bytes]:
    out = []
    end = len(buf)
    while pos < end:
        if end - pos < 4:
            raise ProtocolError("a truncated output in a COMMIT frame")
        (n,) = _U32.unpack_from(buf, pos)
        out.append(buf[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def parse_control(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_CONTROL:
        raise ProtocolError(f"a control frame of {len(body)} bytes is over {MAX_CONTROL}")
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"a control frame that is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("a control frame must hold a JSON object")
    return obj


class FrameSplitter:
    """Splits a byte stream into (type, body) frames, refusing frames over ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rest = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self.rest + data if self.rest else data
        out = []
        pos, end = 0, len(buf)
        unpack = _HEAD.unpack_from
        while end - pos >= 5:
            size, kind = unpack(buf, pos)
            if size < 1 or size > self.limit:
                raise ProtocolError(f"a frame announces {size} bytes (limit {self.limit})")
            stop = pos + 4 + size
            if stop > end:
                break
            out.append((kind, buf[pos + 5 : stop]))
            pos = stop
        self.rest = buf[pos:]
        return out
