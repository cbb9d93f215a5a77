"""Timed sender and receiver for ``actorflow bench``'s latency and memory runs.

``send`` sends a framed file to a source, paced at ``--rate`` frames per second (in
1 ms steps) or as fast as the source takes them (``--rate 0``), and notes after each
write how many frames were handed to the kernel by then. ``receive`` listens for a
sink, notes after each read how many bytes had come by then, optionally reads no
faster than ``--rate`` bytes per second (a slow receiver), and stops once it has
``--expect-bytes`` bytes or ``--expect-frames`` frames. Both write their notes as JSON
to ``--events``: ``{"counts": [...], "times": [...]}`` (times from ``time.monotonic``,
which every process of the machine shares), and print one JSON summary line.

With one worker, outputs leave in the order their inputs came, so the bench pairs the
i-th output's last byte with its input's send time (:func:`latencies`).
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import socket
import struct
import sys
import time
from collections.abc import Sequence

_HEADER = struct.Struct(">I")
SEND_CHUNK = 1000  # frames per write at the maximal rate
STEP = 0.001  # seconds between paced writes


def frame_ends(data: bytes) -> list[int]:
    """Byte offsets where each 4-byte-length-framed frame of ``data`` ends."""
    ends = []
    append = ends.append
    unpack = _HEADER.unpack_from
    pos = 0
    end = len(data)
    while end - pos >= 4:
        pos += 4 + unpack(data, pos)[0]
        append(pos)
    return ends


def _write(path: str, counts: list, times: list) -> None:
    with open(path, "w") as f:
        json.dump({"counts": counts, "times": times}, f)


def send(host: str, port: int, path: str, rate: float, events: str) -> dict:
    with open(path, "rb") as f:
        data = f.read()
    sock = socket.create_connection((host, port), timeout=600)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    if events == "-":  # as fast as taken, nothing noted (frames may span writes)
        started = time.monotonic()
        view = memoryview(data)
        for pos in range(0, len(data), 1 << 20):
            sock.sendall(view[pos : pos + (1 << 20)])
        sock.close()
        return {"bytes": len(data), "seconds": round(time.monotonic() - started, 4)}
    ends = frame_ends(data)
    total = len(ends)
    counts: list[int] = []
    times: list[float] = []
    view = memoryview(data)
    sent = 0
    pos = 0
    started = time.monotonic()
    while sent < total:
        if rate > 0:
            due = min(total, int((time.monotonic() - started) * rate) + 1)
            if due <= sent:
                time.sleep(STEP)
                continue
        else:
            due = min(total, sent + SEND_CHUNK)
        stop = ends[due - 1]
        sock.sendall(view[pos:stop])
        pos = stop
        sent = due
        counts.append(sent)
        times.append(time.monotonic())
    seconds = time.monotonic() - started
    sock.close()
    _write(events, counts, times)
    return {"frames": sent, "seconds": round(seconds, 4)}


def receive(
    listen: str,
    expect_bytes: int,
    expect_frames: int,
    rate: float,
    events: str,
    timeout: float,
) -> dict:
    host, port = listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)))
    print(f"listening on {host}:{server.getsockname()[1]}", file=sys.stderr, flush=True)
    server.settimeout(timeout)
    conn, _ = server.accept()
    conn.settimeout(timeout)
    if rate > 0:  # a small window, so what it does not read stays with the sender
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    counts: list[int] = []
    times: list[float] = []
    digest = hashlib.sha256()
    got = 0
    frames = 0
    rest = b""
    started = time.monotonic()
    deadline = started + timeout
    read_size = 256 * 1024 if rate <= 0 else max(1024, min(256 * 1024, int(rate * STEP * 10)))
    while True:
        if expect_bytes and got >= expect_bytes or expect_frames and frames >= expect_frames:
            break
        if time.monotonic() > deadline:
            break
        if rate > 0:
            ahead = got / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(min(ahead, 0.01))
                continue
        data = conn.recv(read_size)
        if not data:
            break
        got += len(data)
        digest.update(data)
        counts.append(got)
        times.append(time.monotonic())
        if expect_frames:
            buf = rest + data if rest else data
            pos = 0
            end = len(buf)
            while end - pos >= 4:
                stop = pos + 4 + _HEADER.unpack_from(buf, pos)[0]
                if stop > end:
                    break
                pos = stop
                frames += 1
            rest = buf[pos:]
    conn.close()
    server.close()
    if events != "-":
        _write(events, counts, times)
    return {
        "bytes": got,
        "frames": frames,
        "sha256": digest.hexdigest(),
        "seconds": round(time.monotonic() - started, 4),
    }


def _first_at(counts: Sequence[int], times: Sequence[float], n: int) -> float:
    """When the running count first reached ``n``."""
    i = bisect.bisect_left(counts, n)
    return times[min(i, len(times) - 1)]


def latencies(
    sent: dict,
    received: dict,
    out_ends: Sequence[int],
    out_input: Sequence[int] | None = None,
    samples: int = 200_000,
) -> list[float]:
    """Seconds from each (sampled) output's input being sent to its last byte read.

    ``out_ends[j]``: where output j ends in the received byte stream; ``out_input[j]``:
    the index of the input frame it came from (None: output j came from input j).
    """
    n = len(out_ends)
    step = max(1, n // samples)
    sc, st = sent["counts"], sent["times"]
    rc, rt = received["counts"], received["times"]
    out = []
    for j in range(0, n, step):
        i = j if out_input is None else out_input[j]
        out.append(_first_at(rc, rt, out_ends[j]) - _first_at(sc, st, i + 1))
    return out


def percentiles(values: list[float], points: Sequence[float] = (50, 99, 99.9)) -> dict:
    """{"p50": ms, ...} of ``values`` (seconds), nearest rank."""
    if not values:
        return {}
    ordered = sorted(values)
    result = {}
    for p in points:
        k = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
        name = f"p{p:g}".replace(".", "_")
        result[name] = round(1000 * ordered[k], 3)
    result["max"] = round(1000 * ordered[-1], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m actorflow.tools.probe")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("--host", required=True, help="HOST:PORT of the source")
    s.add_argument("--file", required=True)
    s.add_argument("--rate", type=float, default=0.0, help="frames/s; 0: as fast as taken")
    s.add_argument("--events", required=True)
    r = sub.add_parser("receive")
    r.add_argument("--listen", default="127.0.0.1:0")
    r.add_argument("--expect-bytes", type=int, default=0)
    r.add_argument("--expect-frames", type=int, default=0)
    r.add_argument("--rate", type=float, default=0.0, help="bytes/s at most; 0: no limit")
    r.add_argument("--timeout", type=float, default=600.0)
    r.add_argument("--events", required=True)
    a = p.parse_args(argv)
    if a.mode == "send":
        host, port = a.host.rsplit(":", 1)
        summary = send(host, int(port), a.file, a.rate, a.events)
    else:
        summary = receive(a.listen, a.expect_bytes, a.expect_frames, a.rate, a.events, a.timeout)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
