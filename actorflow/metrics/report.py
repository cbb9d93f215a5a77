"""The metrics report: what a worker sends to the ``--metrics`` address, and how.

Shared by the workers (which build and send reports from inside actor processes) and
the hub (``actorflow metrics``), so this module imports nothing outside the standard
library.

Transport
---------
A worker opens one TCP connection to the hub and sends one *frame* per report, at a
steady interval (about 1-2 s): a 4-byte big-endian length, then that many bytes of
UTF-8 JSON holding one report object. :func:`encode_report` builds a whole frame;
:func:`decode_reports` / :class:`ReportReader` split a byte stream back into reports.
Frames larger than :data:`MAX_FRAME` are refused. The hub never answers; a worker that
cannot send (hub down, connection refused, socket buffer full) drops the report and
counts it in ``dropped_reports``: reporting never blocks processing.

Report schema (version 1)
-------------------------
::

    {"v": 1, "app": str, "worker": str, "time": float unix seconds, "interval": float seconds,
     "steps": [{"id": str, "name": str, "kind": "source|chain|router|state|sink", "pipeline": str,
                "records_in": int, "records_out": int, "errors": int, "batches_in": int,
                "batches_out": int (all cumulative since the worker started),
                "buffered": int, "held_acks": int (gauges: back-pressure),
                "latency": <histogram of this interval: time each batch spent being handled
                            in this step>}],
     "pipelines": [{"name": str,
                    "latency": <histogram of this interval: source ingest to sink write,
                                weighted by records>}],
     "dropped_reports": int (cumulative reports this worker could not send)}

- ``time`` is when the report was taken (``time.time()`` on the worker); ``interval``
  the reporting interval the worker aims at (the hub marks a worker *stale* when it has
  not heard from it for 3 intervals).
- ``id`` identifies a step within the app and is the same on every worker that runs it
  (the hub adds up a step's figures across workers by ``id``); ``name`` is for people.
- Counters are cumulative since the worker process started; the hub computes rates from
  consecutive reports and treats a counter that goes down as a restart of the worker.
  For a source, ``records_in`` counts records decoded from its connections and
  ``records_out`` records sent on into the pipeline; for a sink, ``records_in`` counts
  records received and ``records_out`` records encoded and written to the connection.
- ``buffered`` is records waiting in the step's outgoing buffers, ``held_acks`` incoming
  links whose latest batches are held back unacknowledged (back-pressure: an outlet or a
  sink's buffer is full; both "right now"). One acknowledgement covers a link's batches.
- A step's ``latency`` records, per batch, the seconds from receiving the batch to
  having handed its output on. A pipeline's ``latency`` records, per record (a batch of
  n records counts n times), the seconds from the source decoding it to the sink
  writing it, recorded on the worker that runs the sink.
- Fields the hub does not know are ignored; missing counters and gauges count as 0 and a
  missing ``latency`` as an empty histogram.

Histogram wire format
---------------------
``{"counts": [int, ...], "sum": float}``: ``counts[i]`` is how many values ``v`` fell in
``LATENCY_BOUNDS[i-1] < v <= LATENCY_BOUNDS[i]`` (``counts[0]``: ``v <= LATENCY_BOUNDS[0]``;
the last of the ``len(LATENCY_BOUNDS) + 1`` slots is the overflow, ``v >`` the last
bound). Trailing zero slots are left out, so an empty histogram is ``{"counts": []}``.
``sum`` is the sum of the recorded values in seconds (optional, for means). A histogram
with other bounds carries them as ``"bounds": [float, ...]``; :meth:`Histogram.from_wire`
accepts it and :meth:`Histogram.rebinned` maps it onto :data:`LATENCY_BOUNDS`.
"""

from __future__ import annotations

import json
import math
import struct
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "LATENCY_BOUNDS",
    "MAX_FRAME",
    "PERCENTILES",
    "REPORT_VERSION",
    "STEP_KINDS",
    "Histogram",
    "ReportError",
    "ReportReader",
    "check_report",
    "decode_reports",
    "encode_report",
]

REPORT_VERSION = 1
STEP_KINDS = ("source", "chain", "router", "state", "sink")

LATENCY_BOUNDS: tuple[float, ...] = tuple(round(1e-5 * 2**i, 10) for i in range(22))
"""Histogram upper bounds in seconds: 10 µs, 20 µs, 40 µs, ... ~21 s (log scale, x2)."""

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50),
    ("p90", 0.90),
    ("p95", 0.95),
    ("p99", 0.99),
    ("p99.9", 0.999),
)
"""The percentiles the hub shows, as (label, quantile)."""

MAX_FRAME = 4 * 1024 * 1024
"""The largest report frame (payload bytes) a reader accepts."""

_HEADER = struct.Struct(">I")


class ReportError(ValueError):
    """A frame or report that does not follow the format."""


class Histogram:
    """Counts of values (seconds) in log-scale bins; cheap to record, merge and ship.

    ``record`` runs on the hot path (once per batch): one ``bisect`` and three additions.
    """

    __slots__ = ("bounds", "counts", "total", "sum")

    def __init__(self, bounds: Sequence[float] = LATENCY_BOUNDS) -> None:
        self.bounds: tuple[float, ...] = (
            bounds if isinstance(bounds, tuple) else tuple(float(b) for b in bounds)
        )
        self.counts: list[int] = [0] * (len(self.bounds) + 1)
        self.total = 0
        self.sum = 0.0

    def record(self, seconds: float, count: int = 1) -> None:
        """Count ``count`` values of ``seconds`` (a batch of n records: ``count=n``)."""
        self.counts[bisect_left(self.bounds, seconds)] += count
        self.total += count
        self.sum += seconds * count

    def merge(self, other: Histogram) -> Histogram:
        """Add ``other``'s counts to this histogram (same bounds); returns self."""
        if other.bounds != self.bounds:
            other = other.rebinned(self.bounds)
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.total += other.total
        self.sum += other.sum
        return self

    def subtract(self, other: Histogram) -> Histogram:
        """Remove ``other``'s counts (which were merged in before); returns self."""
        if other.bounds != self.bounds:
            other = other.rebinned(self.bounds)
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] = max(0, counts[i] - c)
        self.total = max(0, self.total - other.total)
        self.sum = self.sum - other.sum if self.total else 0.0
        return self

    def take(self) -> Histogram:
        """Return the counts recorded so far as a new histogram and reset this one
        (a worker calls it once per report to get the interval's delta)."""
        taken = Histogram(self.bounds)
        taken.counts, taken.total, taken.sum = self.counts, self.total, self.sum
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0
        self.sum = 0.0
        return taken

    def copy(self) -> Histogram:
        h = Histogram(self.bounds)
        h.counts, h.total, h.sum = list(self.counts), self.total, self.sum
        return h

    def percentile(self, q: float) -> float | None:
        """The upper bound of the bin holding the ``q``-quantile (0 < q <= 1): the
        smallest bound that at least ``ceil(q * total)`` values are at or below.
        ``math.inf`` if that is the overflow bin, None if the histogram is empty."""
        if self.total <= 0:
            return None
        rank = max(1, math.ceil(q * self.total - 1e-9))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return self.bounds[i] if i < len(self.bounds) else math.inf
        return math.inf

    def percentiles(
        self, quantiles: Sequence[tuple[str, float]] = PERCENTILES
    ) -> dict[str, float | None]:
        """``{"p50": ..., "p90": ..., "p95": ..., "p99": ..., "p99.9": ...}`` (as
        :meth:`percentile`, in one pass; ``quantiles`` in increasing order)."""
        if self.total <= 0:
            return {label: None for label, _ in quantiles}
        out: dict[str, float | None] = {}
        todo = [(label, max(1, math.ceil(q * self.total - 1e-9))) for label, q in quantiles]
        j, seen, bounds = 0, 0, self.bounds
        for i, c in enumerate(self.counts):
            seen += c
            while j < len(todo) and seen >= todo[j][1]:
                out[todo[j][0]] = bounds[i] if i < len(bounds) else math.inf
                j += 1
            if j == len(todo):
                break
        for label, _ in todo[j:]:
            out[label] = math.inf
        return out

    def mean(self) -> float | None:
        return self.sum / self.total if self.total else None

    def rebinned(self, bounds: Sequence[float] = LATENCY_BOUNDS) -> Histogram:
        """This histogram mapped onto other bounds: each bin's count moves to the bin of
        its upper bound (the overflow stays overflow)."""
        h = Histogram(bounds)
        for i, c in enumerate(self.counts):
            if c:
                if i < len(self.bounds):
                    h.counts[bisect_left(h.bounds, self.bounds[i])] += c
                else:
                    h.counts[-1] += c
        h.total, h.sum = self.total, self.sum
        return h

    def to_wire(self) -> dict[str, Any]:
        """The JSON form (see the module docstring): trailing zero counts left out."""
        counts = self.counts
        n = len(counts)
        while n and not counts[n - 1]:
            n -= 1
        wire: dict[str, Any] = {"counts": counts[:n]}
        if self.sum:
            wire["sum"] = self.sum
        if self.bounds != LATENCY_BOUNDS:
            wire["bounds"] = list(self.bounds)
        return wire

    @classmethod
    def from_wire(cls, d: Any) -> Histogram:
        """Parse the JSON form; raises ReportError if it is malformed."""
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ReportError("a histogram must be an object")
        bounds: Sequence[float] = LATENCY_BOUNDS
        if "bounds" in d:
            raw = d["bounds"]
            if not isinstance(raw, list) or not raw or not all(_is_number(b) for b in raw):
                raise ReportError("histogram bounds must be a list of numbers")
            bounds = tuple(float(b) for b in raw)
            if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:], strict=False)):
                raise ReportError("histogram bounds must increase")
            if bounds == LATENCY_BOUNDS:
                bounds = LATENCY_BOUNDS
        h = cls(bounds)
        counts = d.get("counts", [])
        if not isinstance(counts, list) or len(counts) > len(h.counts):
            raise ReportError(f"histogram counts must be a list of at most {len(h.counts)}")
        for i, c in enumerate(counts):
            if not isinstance(c, int) or isinstance(c, bool) or c < 0:
                raise ReportError("histogram counts must be non-negative integers")
            h.counts[i] = c
        h.total = sum(counts)
        s = d.get("sum", 0.0)
        if not _is_number(s) or not math.isfinite(s):
            raise ReportError("histogram sum must be a number")
        h.sum = float(s)
        return h

    @classmethod
    def of(cls, values: Iterable[float]) -> Histogram:
        h = cls()
        for v in values:
            h.record(v)
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Histogram):
            return NotImplemented
        return self.bounds == other.bounds and self.counts == other.counts

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Histogram(total={self.total}, p50={self.percentile(0.5)})"


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


# --- frames --------------------------------------------------------------------------


def encode_report(report: dict[str, Any]) -> bytes:
    """One whole frame: 4-byte big-endian length + the report as compact UTF-8 JSON.

    Histogram objects anywhere in the report are written in their wire form.
    """
    payload = json.dumps(
        report, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default
    ).encode()
    return _HEADER.pack(len(payload)) + payload


def _default(obj: Any) -> Any:
    if isinstance(obj, Histogram):
        return obj.to_wire()
    raise TypeError(f"cannot encode {type(obj).__name__} in a report")


def decode_reports(
    buffer: bytes | bytearray | memoryview, max_frame: int = MAX_FRAME
) -> tuple[list[dict[str, Any]], bytes]:
    """Split ``buffer`` into the reports of its complete frames and the bytes left over
    (an incomplete frame, to be prefixed to the next data received).

    Raises ReportError for a frame longer than ``max_frame`` or whose payload is not a
    JSON object; the stream has then lost its way and the connection should be closed.
    The reports are not checked against the schema (see :func:`check_report`).
    """
    view = memoryview(buffer)
    reports: list[dict[str, Any]] = []
    pos, end = 0, len(view)
    while end - pos >= 4:
        (n,) = _HEADER.unpack_from(view, pos)
        if n > max_frame:
            raise ReportError(f"report frame of {n} bytes exceeds the limit of {max_frame}")
        if end - pos - 4 < n:
            break
        payload = bytes(view[pos + 4 : pos + 4 + n])
        pos += 4 + n
        try:
            obj = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as e:
            raise ReportError(f"report frame is not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ReportError("a report must be a JSON object")
        reports.append(obj)
    return reports, bytes(view[pos:])


class ReportReader:
    """Incremental :func:`decode_reports` for one connection: feed it what ``recv``
    returned, get the reports completed so far."""

    __slots__ = ("max_frame", "_buf")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes held that do not form a complete frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        buf = self._buf + data if self._buf else data
        reports, self._buf = decode_reports(buf, self.max_frame)
        return reports


# --- checking ------------------------------------------------------------------------

_STEP_COUNTERS = (
    "records_in",
    "records_out",
    "errors",
    "batches_in",
    "batches_out",
    "late_dropped",  # window steps: late records by policy (0 elsewhere)
    "late_fired",
    "late_placed",
)
_STEP_GAUGES = ("buffered", "held_acks")


def _int_field(d: dict[str, Any], key: str, where: str) -> int:
    v = d.get(key, 0)
    if v is None:
        return 0
    if not _is_number(v) or v < 0 or (isinstance(v, float) and not v.is_integer()):
        raise ReportError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    return int(v)


def _str_field(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or (default is None and not v):
        raise ReportError(f"{where}: {key} must be a non-empty string")
    return v


def check_report(obj: Any) -> dict[str, Any]:
    """Validate a decoded report and return it normalized: every documented field
    present with its type (counters and gauges as ints, defaults filled in) and the
    histograms parsed into :class:`Histogram` objects. Raises ReportError."""
    if not isinstance(obj, dict):
        raise ReportError("a report must be a JSON object")
    if obj.get("v") != REPORT_VERSION:
        raise ReportError(f"unsupported report version {obj.get('v')!r}")
    app = _str_field(obj, "app", "report")
    worker = _str_field(obj, "worker", "report")
    t = obj.get("time")
    if not _is_number(t) or not math.isfinite(t):
        raise ReportError("report: time must be a number (unix seconds)")
    interval = obj.get("interval")
    if not _is_number(interval) or not 0 < interval < 3600:
        raise ReportError("report: interval must be a number of seconds > 0")
    raw_steps = obj.get("steps", [])
    raw_pipes = obj.get("pipelines", [])
    if not isinstance(raw_steps, list) or not isinstance(raw_pipes, list):
        raise ReportError("report: steps and pipelines must be lists")
    steps = []
    seen: set[str] = set()
    for s in raw_steps:
        if not isinstance(s, dict):
            raise ReportError("report: each step must be an object")
        sid = _str_field(s, "id", "step")
        where = f"step {sid!r}"
        if sid in seen:
            raise ReportError(f"{where} appears twice")
        seen.add(sid)
        step: dict[str, Any] = {
            "id": sid,
            "name": _str_field(s, "name", where, default=sid) or sid,
            "kind": _str_field(s, "kind", where, default="chain"),
            "pipeline": _str_field(s, "pipeline", where, default=""),
        }
        for key in _STEP_COUNTERS + _STEP_GAUGES:
            step[key] = _int_field(s, key, where)
        try:
            step["latency"] = Histogram.from_wire(s.get("latency"))
        except ReportError as e:
            raise ReportError(f"{where}: latency: {e}") from None
        steps.append(step)
    pipelines = []
    for p in raw_pipes:
        if not isinstance(p, dict):
            raise ReportError("report: each pipeline must be an object")
        name = _str_field(p, "name", "pipeline")
        try:
            latency = Histogram.from_wire(p.get("latency"))
        except ReportError as e:
            raise ReportError(f"pipeline {name!r}: latency: {e}") from None
        pipelines.append({"name": name, "latency": latency})
    return {
        "v": REPORT_VERSION,
        "app": app,
        "worker": worker,
        "time": float(t),
        "interval": float(interval),
        "steps": steps,
        "pipelines": pipelines,
        "dropped_reports": _int_field(obj, "dropped_reports", "report"),
        "cluster": _cluster_field(obj.get("cluster")),
    }


CLUSTER_FIGURES = ("table_version", "rescales", "last_pause_seconds", "paused_seconds_total")


def _cluster_field(raw: Any) -> dict[str, float] | None:
    """The initializer's cluster figures (grow and shrink), or None where absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ReportError("report: cluster must be an object")
    out = {}
    for key in CLUSTER_FIGURES:
        v = raw.get(key, 0)
        if not _is_number(v) or not math.isfinite(v) or v < 0:
            raise ReportError(f"report: cluster.{key} must be a number >= 0")
        out[key] = float(v)
    return out
