"""Wire formats spoken on TCP sources, besides the app's own frames.

Data frames are the app's: a length header (``@decoder(header_length, length_fmt)``,
4-byte big-endian by default), then the payload.

The acknowledged-sender protocol adds control frames, which a data frame can never
look like because their length header is the reserved value 0xFFFFFFFF::

    control frame = FF FF FF FF | u32 big-endian length | UTF-8 JSON object

1. A replaying sender opens with ``{"hello": 1, "stream": "<name>"}``. In an
   authenticated cluster the source answers ``{"challenge": C}`` and the sender
   proves it may claim the stream with ``{"proof": P}``, P = HMAC-SHA256(token, name
   NUL C) in hex, where the token is the one ``actorflow token --stream <name>``
   prints (derived from the cluster secret, see :mod:`actorflow.security`). A wrong
   proof gets ``{"error": ...}`` and the connection is closed; the stream's own
   connection and offset are untouched.
2. The source answers ``{"resume": N, "ack": A}``: the sender sends its messages from
   index N (0-based) on (the source has taken the first N); the first A are covered by
   the last completed checkpoint and will never be needed again.
3. As checkpoints complete, the source sends ``{"ack": A}``. Only an ack, never a
   resume, lets the sender forget messages: a rollback replays from the last ack.
4. After a reconnect (a worker restarted, the cluster rolled back) the sender says
   hello again and resumes where it is told.
5. When the source's worker leaves the cluster (``actorflow shrink``) the source sends
   ``{"moved": "host:port"}`` and closes: the stream continues at that source, which
   has taken over its offsets; the sender says hello there and resumes where told.

A connection whose first frame is not a hello is a plain sender: its records are
processed, but cannot be replayed after a failure (the cluster counts them).
"""

from __future__ import annotations

import json
import struct
from typing import Any

CONTROL_MAGIC = 0xFFFFFFFF
MAGIC_BYTES = struct.pack(">I", CONTROL_MAGIC)
_LEN = struct.Struct(">I")
MAX_CONTROL = 64 * 1024


def control_frame(message: dict[str, Any]) -> bytes:
    """One control frame carrying ``message``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return MAGIC_BYTES + _LEN.pack(len(body)) + body


def read_control(buf: bytes, pos: int = 0) -> tuple[dict[str, Any] | None, int]:
    """Parse the control frame at ``buf[pos:]``: (message, end), or (None, pos) if it is
    not complete yet. ValueError if it is not a control frame or is malformed."""
    if len(buf) - pos < 8:
        if buf[pos : pos + 4] and not MAGIC_BYTES.startswith(buf[pos : pos + 4]):
            raise ValueError("not a control frame")
        return None, pos
    if buf[pos : pos + 4] != MAGIC_BYTES:
        raise ValueError("not a control frame")
    (size,) = _LEN.unpack_from(buf, pos + 4)
    if size > MAX_CONTROL:
        raise ValueError(f"a control frame of {size} bytes is over the limit of {MAX_CONTROL}")
    end = pos + 8 + size
    if len(buf) < end:
        return None, pos
    try:
        message = json.loads(buf[pos + 8 : end])
    except ValueError as exc:
        raise ValueError(f"a control frame that is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("a control frame must hold a JSON object")
    return message, end


def is_control_start(buf: bytes) -> bool:
    """True if ``buf`` starts like a control frame (enough bytes to tell, or a prefix)."""
    head = buf[:4]
    return bool(head) and MAGIC_BYTES.startswith(head)
