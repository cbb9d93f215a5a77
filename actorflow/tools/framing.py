"""Wire helpers shared by the test tools: 4-byte length-prefixed frames and H:P addresses.

Wallaroo's TCP sources and sinks speak frames made of a 4-byte big-endian length header
followed by that many payload bytes. The sender, the receiver and the generators all need
to build and split such frames, and the receiver must do it fast (hundreds of thousands
of frames per second in pure Python), so the one parser lives here and is kept to a single
tight loop over `struct.unpack_from` and plain slicing.
"""

from __future__ import annotations

import struct

from actorflow.errors import FrameError

HEADER_SIZE = 4
DEFAULT_MAX_FRAME = 16 * 1024 * 1024

_HEADER = struct.Struct(">I")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class FrameTooLarge(FrameError, ValueError):
    """A frame header announced more payload bytes than the reader accepts.

    `payloads` holds the frames completed before the bad header, in the same feed.
    """

    def __init__(self, message: str, payloads: list[bytes] | None = None) -> None:
        super().__init__(message)
        self.payloads: list[bytes] = payloads if payloads is not None else []


def frame(payload: bytes) -> bytes:
    """Return `payload` with its 4-byte big-endian length header in front."""
    return _pack_header(len(payload)) + payload


class FrameReader:
    """Split a byte stream into frame payloads, keeping any incomplete frame for later.

    Feed it whatever `recv` returned; it returns the payloads completed so far (headers
    removed). A frame larger than the chunks it arrives in is gathered without re-copying
    the partial data on every feed, so big frames cost linear time.
    """

    __slots__ = ("max_frame", "_buf", "_parts", "_parts_len", "_need")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = b""  # unparsed bytes that start at a frame boundary
        self._parts: list[bytes] = []  # chunks of one big frame still being gathered
        self._parts_len = 0
        self._need = 0  # bytes the frame in _parts needs in total (header included)

    @property
    def pending(self) -> int:
        """Number of bytes held that do not yet form a complete frame."""
        return len(self._buf) + self._parts_len

    def feed(self, data: bytes) -> list[bytes]:
        """Add `data` and return the payloads of every frame it completes, in order.

        Raises FrameTooLarge if a header announces more than `max_frame` bytes (its
        `payloads` are the frames completed before it); the reader is then unusable
        because the stream has lost its frame boundaries.
        """
        if self._parts:
            self._parts.append(data)
            self._parts_len += len(data)
            if self._parts_len < self._need:
                return []
            buf = b"".join(self._parts)
            self._parts = []
            self._parts_len = 0
        elif self._buf:
            buf = self._buf + data
        else:
            buf = data
        out: list[bytes] = []
        append = out.append
        unpack = _unpack_header
        limit = self.max_frame
        n = len(buf)
        pos = 0
        while n - pos >= 4:
            size = unpack(buf, pos)[0]
            if size > limit:
                raise FrameTooLarge(
                    f"frame header announces {size} bytes, more than the limit of {limit} bytes",
                    out,
                )
            end = pos + 4 + size
            if end > n:
                break
            append(buf[pos + 4 : end])
            pos = end
        rest = buf[pos:] if pos else buf
        if n - pos >= 4:
            # A frame that is still incomplete: gather its chunks without re-joining.
            self._buf = b""
            self._parts = [bytes(rest)]
            self._parts_len = len(rest)
            self._need = 4 + unpack(rest, 0)[0]
        else:
            self._buf = bytes(rest)
        return out


def split_frames(data: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[list[bytes], int]:
    """Split a whole buffer into payloads; return them and the count of trailing bytes left."""
    reader = FrameReader(max_frame)
    payloads = reader.feed(data)
    return payloads, reader.pending


def parse_address(text: str, *, default_host: str | None = None) -> tuple[str, int]:
    """Parse "HOST:PORT" (or "[IPv6]:PORT") into (host, port); raise ValueError if malformed.

    An empty host is replaced by `default_host`, or rejected when that is None.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        raise ValueError(f"address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise ValueError(f"address {text!r} has no host")
        host = default_host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {text!r} has a port that is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {text!r} has a port outside 0..65535")
    return host, port


def format_address(host: str, port: int) -> str:
    """Format (host, port) as "HOST:PORT", bracketing IPv6 hosts."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
