"""The metrics hub: ``actorflow metrics --listen H:P --http H:P [--window S]``.

Workers started with ``--metrics H:P`` send a report (see :mod:`actorflow.metrics.report`)
every second or two to ``--listen``. The hub keeps ``--window`` seconds of history and
serves on ``--http``:

- ``/``: a page that shows the cluster live (throughput and latency per pipeline, per
  worker and per step, as charts that update without reloading); its script and style
  are served from ``/static/`` (files installed with the package, nothing from the
  network);
- ``/metrics``: the Prometheus text format (cumulative counters as the workers report
  them, back-pressure gauges, latency histograms accumulated since the hub started,
  ``actorflow_worker_up``);
- ``/api/metrics``: everything the page shows, as JSON. ``?series=none`` leaves out the
  time series, ``?series=charts`` keeps only those the page draws (aggregates' and the
  per-worker step throughputs).

On start it prints one line, ``metrics hub: reports on H:P, page on http://H:P/``, with
the ports it really bound (``0`` picks free ports).

Aggregation
-----------
Rates come from consecutive reports of one worker: the increase of a cumulative counter
divided by the time between the two reports (by the worker's clock). A counter that goes
down means the worker restarted: its new value is then the increase, over one interval.
A worker's first report only sets the baseline (it may have run for hours before the
hub started). Each rate point covers the span ``(received - dt, received]`` in the hub's
clock. Sums across workers (a step on all its workers, a worker's sources, a pipeline's
sources) are computed per time bucket of ``bucket`` seconds (default 1): each series
contributes its time-weighted mean rate over the part of the bucket its points cover,
so workers that report at different moments or intervals add up correctly. A bucket is
shown once every live member has reported past its end. Latency histograms of one
interval are merged per bucket (by the time the report arrived) and over the window.
A worker is *stale* when nothing came from it for 3 of its intervals; it is forgotten
after ``window`` seconds of silence. Memory is bounded: per series, a deque of points
pruned to the window (and capped at ``window / 0.1`` points) and one entry per bucket of
the window; the aggregates are updated as reports arrive, so serving a snapshot only adds
up buckets.

``/api/metrics`` shape
----------------------
::

    {"v": 1, "time": float (hub clock, unix s), "window": float s, "bucket": float s,
     "percentiles": ["p50", "p90", "p95", "p99", "p99.9"],
     "hub": {"started": float, "reports": int, "invalid_reports": int, "connections": int},
     "apps": [str],
     "pipelines": [{"app": str, "name": str, "workers": [str],
                    "ingest": T (its source steps' records_out, summed over workers),
                    "output": T (its sink steps' records_out),
                    "latency": L (source ingest to sink write, merged over workers)}],
     "workers": [{"app": str, "worker": str, "up": bool, "stale": bool,
                  "last_report": float, "age": float s, "interval": float s,
                  "reports": int, "restarts": int, "dropped_reports": int,
                  "cluster": {"table_version", "rescales", "last_pause_seconds",
                              "paused_seconds_total": float} | null (the initializer's),
                  "steps": [str],
                  "ingest": T (its source steps' records_out), "output": T (its sinks')}],
     "steps": [{"app": str, "id": str, "name": str, "kind": str, "pipeline": str,
                "workers": [str], "records_in": int, "records_out": int, "errors": int,
                "batches_in": int, "batches_out": int (sums of the workers' cumulative
                counters), "buffered": int, "held_acks": int (sums over live workers),
                "throughput": T (records_out, summed over workers), "input": T (records_in),
                "latency": L (merged over workers),
                "per_worker": [{"worker": str, "key": "<step id>@<worker>", "stale": bool,
                                "records_in": ..., "held_acks": int (as above, this worker),
                                "throughput": T, "input": T (one point per report),
                                "latency": L (one point per report with batches)}]}]}

    T = {"last": float | null, "min": float | null, "median": float | null,
         "max": float | null (records/s over the window),
         "series": [[time, records/s | null], ...] (sums: one point per complete bucket,
                   at its end, null where no member covered it; per worker: one point
                   per report, at its arrival)}
    L = {"last": P | null (the latest interval or bucket with data), "last_time": float | null,
         "window": P | null (all the window's histograms merged),
         "count": int (values in the window), "mean": float | null (seconds),
         "series": [[time, p50, p90, p95, p99, p99.9], ...]}
    P = {"p50": s, "p90": s, "p95": s, "p99": s, "p99.9": s}

Which ``series`` are present depends on ``?series=``: all of them by default, none with
``none``, and with ``charts`` all but the per-worker ``input`` and ``latency`` series and
the ``input`` and workers' ``output`` sums.

Percentiles are in seconds, the upper bound of the histogram bin (see
:data:`~actorflow.metrics.report.LATENCY_BOUNDS`); beyond the last bound (~21 s) the
last bound is given. Lists are in order of first appearance (workers by name).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import signal
import socket
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from actorflow.metrics.report import (
    LATENCY_BOUNDS,
    PERCENTILES,
    Histogram,
    ReportError,
    ReportReader,
    check_report,
)

log = logging.getLogger("actorflow.metrics")

STATIC_DIR = Path(__file__).resolve().parent / "static"
STALE_INTERVALS = 3
MIN_INTERVAL = 0.1  # the deque cap assumes no series gets points faster than this
COUNTERS = (
    "records_in",
    "records_out",
    "errors",
    "batches_in",
    "batches_out",
    "late_dropped",
    "late_fired",
    "late_placed",
)
GAUGES = ("buffered", "held_acks")
SERIES_MODES = ("all", "charts", "none")
_LAST_BOUND = LATENCY_BOUNDS[-1]

# A rate point: (t_end, dt, rate_in, rate_out, errors, [t, rate_in], [t, rate_out]); the
# two lists are the point as /api/metrics shows it, built once.
Point = tuple[float, float, float, float, float, list, list]


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _pct(h: Histogram | None) -> dict[str, float | None] | None:
    if h is None or not h.total:
        return None
    return {k: _LAST_BOUND if v is None or math.isinf(v) else v for k, v in h.percentiles().items()}


def _pct_row(t: float, h: Histogram) -> list[float | None]:
    p = _pct(h) or {}
    return [round(t, 3), *(p.get(label) for label, _ in PERCENTILES)]


# --- state ---------------------------------------------------------------------------


class _Latency:
    """One worker's latency series (of a step or a pipeline): the histograms of recent
    intervals with their percentile rows (computed once), and their running sum."""

    __slots__ = ("points", "window", "total")

    def __init__(self, maxlen: int) -> None:
        self.points: deque[tuple[float, Histogram, list]] = deque(maxlen=maxlen)
        self.window = Histogram()  # the histograms in `points`, merged
        self.total = Histogram()  # everything since the hub started (Prometheus)

    def add(self, t: float, h: Histogram) -> None:
        if len(self.points) == self.points.maxlen:
            self.window.subtract(self.points[0][1])
        self.points.append((t, h, _pct_row(t, h)))
        self.window.merge(h)
        self.total.merge(h)

    def prune(self, horizon: float) -> None:
        points = self.points
        while points and points[0][0] < horizon:
            self.window.subtract(points.popleft()[1])
        if not points:
            self.window = Histogram()


class _BucketLatency:
    """Histograms of many workers merged per time bucket (a step's or a pipeline's)."""

    __slots__ = ("buckets", "window", "rows")

    def __init__(self) -> None:
        self.buckets: dict[int, Histogram] = {}
        self.window = Histogram()
        self.rows: dict[int, list] = {}  # percentile rows of buckets, made when first shown

    def add(self, b: int, h: Histogram) -> None:
        bucket = self.buckets.get(b)
        if bucket is None:
            bucket = self.buckets[b] = Histogram()
        bucket.merge(h)
        self.window.merge(h)
        self.rows.pop(b, None)

    def prune(self, first_b: int) -> None:
        for b in [b for b in self.buckets if b < first_b]:
            self.window.subtract(self.buckets.pop(b))
            self.rows.pop(b, None)
        if not self.buckets:
            self.window = Histogram()

    def row(self, b: int, bucket: float) -> list:
        row = self.rows.get(b)
        if row is None:
            row = self.rows[b] = _pct_row((b + 1) * bucket, self.buckets[b])
        return row


class _StepSeries:
    __slots__ = ("id", "name", "kind", "pipeline", "cum", "gauges", "rates", "rb", "lat", "seen")

    def __init__(self, sid: str, maxlen: int) -> None:
        self.id = sid
        self.name = sid
        self.kind = "chain"
        self.pipeline = ""
        self.cum = dict.fromkeys(COUNTERS, 0)
        self.gauges = dict.fromkeys(GAUGES, 0)
        self.rates: deque[Point] = deque(maxlen=maxlen)
        # per time bucket: [records in, records out, seconds covered] apportioned from rates
        self.rb: dict[int, list[float]] = {}
        self.lat = _Latency(maxlen)
        self.seen = 0.0


class _PipeSeries:
    __slots__ = ("name", "lat", "seen")

    def __init__(self, name: str, maxlen: int) -> None:
        self.name = name
        self.lat = _Latency(maxlen)
        self.seen = 0.0


class _Worker:
    __slots__ = (
        "app",
        "name",
        "interval",
        "first_seen",
        "last_seen",
        "last_time",
        "reports",
        "restarts",
        "dropped_reports",
        "steps",
        "pipes",
        "cluster",
    )

    def __init__(self, app: str, name: str, now: float) -> None:
        self.app = app
        self.name = name
        self.interval = 1.0
        self.first_seen = now
        self.last_seen = now
        self.last_time = 0.0
        self.reports = 0
        self.restarts = 0
        self.dropped_reports = 0
        self.cluster: dict[str, float] | None = None  # the initializer's rescale figures
        self.steps: dict[str, _StepSeries] = {}
        self.pipes: dict[str, _PipeSeries] = {}


class HubState:
    """Everything the hub knows, fed by :meth:`ingest` and read by :meth:`snapshot` and
    :meth:`prometheus_families`. No I/O, so tests drive it with their own clock
    (``now``, unix seconds); thread-safe. Aggregates are kept up to date as reports
    arrive, so a snapshot only adds up per-bucket figures."""

    def __init__(self, window: float = 300.0, bucket: float = 1.0) -> None:
        if window <= 0 or bucket <= 0:
            raise ValueError("window and bucket must be positive")
        self.window = float(window)
        self.bucket = float(bucket)
        self.maxlen = int(math.ceil(self.window / MIN_INTERVAL)) + 2
        self.started = time.time()
        self.reports = 0
        self.invalid_reports = 0
        self.connections = 0
        self.workers: dict[tuple[str, str], _Worker] = {}
        # (app, "step" | "pipe", id or name): latency merged over workers per bucket
        self.agg_lat: dict[tuple[str, str, str], _BucketLatency] = {}
        self._order: dict[tuple[str, str], int] = {}  # (app, step id or "|" + pipeline)
        self._pruned = -math.inf
        self._lock = threading.RLock()

    # ingest ----------------------------------------------------------------------------

    def ingest(self, report: dict[str, Any], now: float | None = None) -> dict[str, Any]:
        """Take one decoded report (received at ``now``); returns it checked. Raises
        ReportError (and counts it) if it does not follow the format."""
        now = time.time() if now is None else now
        try:
            r = check_report(report)
        except ReportError:
            with self._lock:
                self.invalid_reports += 1
            raise
        with self._lock:
            self._ingest(r, now)
            if now - self._pruned > min(5.0, self.window / 10):
                self.prune(now)
        return r

    def _ingest(self, r: dict[str, Any], now: float) -> None:
        self.reports += 1
        key = (r["app"], r["worker"])
        w = self.workers.get(key)
        first = w is None
        if w is None:
            w = self.workers[key] = _Worker(r["app"], r["worker"], now)
        restarted = False
        if not first:
            restarted = r["dropped_reports"] < w.dropped_reports or any(
                s["id"] in w.steps and s[k] < w.steps[s["id"]].cum[k]
                for s in r["steps"]
                for k in COUNTERS
            )
            if restarted:
                w.restarts += 1
        dt = r["time"] - w.last_time
        if restarted or dt <= 0:
            dt = r["interval"]
        B = self.bucket
        first_b = math.floor((now - self.window) / B)
        t3 = round(now, 3)
        for s in r["steps"]:
            sid = s["id"]
            ss = w.steps.get(sid)
            if ss is None:
                ss = w.steps[sid] = _StepSeries(sid, self.maxlen)
            self._order.setdefault((w.app, sid), len(self._order))
            if s["pipeline"]:
                self._order.setdefault((w.app, "|" + s["pipeline"]), len(self._order))
            ss.name, ss.kind, ss.pipeline = s["name"], s["kind"], s["pipeline"]
            if not first:
                old = ss.cum
                d_in, d_out, d_err = (
                    s[k] if restarted else s[k] - old[k]
                    for k in ("records_in", "records_out", "errors")
                )
                r_in, r_out = d_in / dt, d_out / dt
                ss.rates.append(
                    (now, dt, r_in, r_out, float(d_err), [t3, _r(r_in)], [t3, _r(r_out)])
                )
                # apportion the point over the time buckets it covers
                start = now - dt
                b = max(math.floor(start / B), first_b)
                while b * B < now:
                    ov = min(now, (b + 1) * B) - max(start, b * B)
                    if ov > 1e-9:
                        acc = ss.rb.get(b)
                        if acc is None:
                            acc = ss.rb[b] = [0.0, 0.0, 0.0]
                        acc[0] += r_in * ov
                        acc[1] += r_out * ov
                        acc[2] += ov
                    b += 1
            ss.cum = {k: s[k] for k in COUNTERS}
            ss.gauges = {k: s[k] for k in GAUGES}
            _prune(ss.rates, now - self.window)
            rb = ss.rb
            while rb and (oldest := next(iter(rb))) < first_b:  # mostly in time order
                del rb[oldest]
            h = s["latency"]
            if h.total:
                h = h if h.bounds == LATENCY_BOUNDS else h.rebinned()
                ss.lat.add(now, h)
                self._agg(w.app, "step", sid).add(math.floor(now / B), h)
            ss.lat.prune(now - self.window)
            ss.seen = now
        for p in r["pipelines"]:
            ps = w.pipes.get(p["name"])
            if ps is None:
                ps = w.pipes[p["name"]] = _PipeSeries(p["name"], self.maxlen)
            self._order.setdefault((w.app, "|" + p["name"]), len(self._order))
            h = p["latency"]
            if h.total:
                h = h if h.bounds == LATENCY_BOUNDS else h.rebinned()
                ps.lat.add(now, h)
                self._agg(w.app, "pipe", p["name"]).add(math.floor(now / B), h)
            ps.lat.prune(now - self.window)
            ps.seen = now
        w.interval = r["interval"]
        w.last_seen = now
        w.last_time = r["time"]
        w.reports += 1
        w.dropped_reports = r["dropped_reports"]
        if r["cluster"] is not None:
            w.cluster = r["cluster"]

    def _agg(self, app: str, kind: str, name: str) -> _BucketLatency:
        key = (app, kind, name)
        agg = self.agg_lat.get(key)
        if agg is None:
            agg = self.agg_lat[key] = _BucketLatency()
        return agg

    def is_stale(self, w: _Worker, now: float) -> bool:
        return now - w.last_seen > STALE_INTERVALS * w.interval

    def prune(self, now: float) -> None:
        """Drop history older than the window; forget workers silent for longer than the
        window, and steps and pipelines a worker has not mentioned for that long."""
        horizon = now - self.window
        first_b = math.floor(horizon / self.bucket)
        with self._lock:
            self._pruned = now
            gone = [k for k, w in self.workers.items() if w.last_seen < horizon]
            for key in gone:
                del self.workers[key]
            for w in self.workers.values():
                for sid in [k for k, s in w.steps.items() if s.seen < horizon]:
                    del w.steps[sid]
                for name in [k for k, p in w.pipes.items() if p.seen < horizon]:
                    del w.pipes[name]
                for s in w.steps.values():
                    _prune(s.rates, horizon)
                    for b in [b for b in s.rb if b < first_b]:
                        del s.rb[b]
                    s.lat.prune(horizon)
                for p in w.pipes.values():
                    p.lat.prune(horizon)
            for key, agg in list(self.agg_lat.items()):
                agg.prune(first_b)
                if not agg.buckets:
                    del self.agg_lat[key]
            if gone:  # keep the display order only of what is still known
                known = {(w.app, sid) for w in self.workers.values() for sid in w.steps}
                known |= {
                    (w.app, "|" + s.pipeline)
                    for w in self.workers.values()
                    for s in w.steps.values()
                }
                known |= {(w.app, "|" + name) for w in self.workers.values() for name in w.pipes}
                self._order = {k: i for k, i in self._order.items() if k in known}

    # snapshot --------------------------------------------------------------------------

    def snapshot(self, now: float | None = None, series: bool | str = True) -> dict[str, Any]:
        """The ``/api/metrics`` document (see the module docstring). ``series``: "all"
        (or True), "charts" (only the series the page draws) or "none" (or False)."""
        mode = {True: "all", False: "none"}.get(series, series)  # type: ignore[call-overload]
        if mode not in SERIES_MODES:
            raise ValueError(f"series must be one of {', '.join(SERIES_MODES)}")
        now = time.time() if now is None else now
        with self._lock:
            self.prune(now)
            return _Snapshot(self, now, mode).build()

    # prometheus ------------------------------------------------------------------------

    def prometheus_families(self, now: float | None = None) -> list[Any]:
        """The hub's state as prometheus_client metric families (for a Collector)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        now = time.time() if now is None else now
        step_labels = ["app", "worker", "pipeline", "step", "name", "kind"]
        counters = {
            k: CounterMetricFamily(
                f"actorflow_step_{k}",
                f"{k.replace('_', ' ')} of a step on a worker, cumulative since the worker started",
                labels=step_labels,
            )
            for k in COUNTERS
        }
        gauges = {
            "buffered": GaugeMetricFamily(
                "actorflow_step_buffered",
                "records waiting in a step's outgoing buffers (back-pressure)",
                labels=step_labels,
            ),
            "held_acks": GaugeMetricFamily(
                "actorflow_step_held_acks",
                "batches a step received and has not acknowledged yet (back-pressure)",
                labels=step_labels,
            ),
        }
        step_lat = HistogramMetricFamily(
            "actorflow_step_latency_seconds",
            "time a batch spent being handled in a step (since the hub started)",
            labels=step_labels,
        )
        pipe_lat = HistogramMetricFamily(
            "actorflow_pipeline_latency_seconds",
            "time from source ingest to sink write per record (since the hub started)",
            labels=["app", "worker", "pipeline"],
        )
        wlabels = ["app", "worker"]
        up = GaugeMetricFamily(
            "actorflow_worker_up", "1 if the worker reported within 3 intervals", labels=wlabels
        )
        age = GaugeMetricFamily(
            "actorflow_worker_last_report_age_seconds",
            "seconds since the worker's last report",
            labels=wlabels,
        )
        restarts = CounterMetricFamily(
            "actorflow_worker_restarts",
            "restarts of the worker seen by the hub (its counters went down)",
            labels=wlabels,
        )
        dropped = CounterMetricFamily(
            "actorflow_reports_dropped",
            "metrics reports the worker could not send, as it reports",
            labels=wlabels,
        )
        rescale = {
            "table_version": GaugeMetricFamily(
                "actorflow_cluster_table_version",
                "the partition owner table's version (one more per grow or shrink)",
                labels=wlabels,
            ),
            "rescales": CounterMetricFamily(
                "actorflow_cluster_rescales", "grows and shrinks completed", labels=wlabels
            ),
            "last_pause_seconds": GaugeMetricFamily(
                "actorflow_cluster_rescale_pause_seconds",
                "how long processing paused in the last grow or shrink",
                labels=wlabels,
            ),
            "paused_seconds_total": CounterMetricFamily(
                "actorflow_cluster_rescale_paused_seconds",
                "time processing paused for grows and shrinks, in all",
                labels=wlabels,
            ),
        }
        received = CounterMetricFamily("actorflow_hub_reports_received", "reports accepted")
        invalid = CounterMetricFamily(
            "actorflow_hub_reports_invalid", "frames or reports the hub refused"
        )
        with self._lock:
            self.prune(now)
            for w in sorted(self.workers.values(), key=lambda w: (w.app, w.name)):
                wl = [w.app, w.name]
                up.add_metric(wl, 0.0 if self.is_stale(w, now) else 1.0)
                age.add_metric(wl, max(0.0, now - w.last_seen))
                restarts.add_metric(wl, float(w.restarts))
                dropped.add_metric(wl, float(w.dropped_reports))
                for k, fam in rescale.items():
                    if w.cluster is not None:
                        fam.add_metric(wl, w.cluster[k])
                for s in w.steps.values():
                    sl = [w.app, w.name, s.pipeline, s.id, s.name, s.kind]
                    for k in COUNTERS:
                        counters[k].add_metric(sl, float(s.cum[k]))
                    for k in GAUGES:
                        gauges[k].add_metric(sl, float(s.gauges[k]))
                    step_lat.add_metric(sl, *_prom_buckets(s.lat.total))
                for p in w.pipes.values():
                    pipe_lat.add_metric([w.app, w.name, p.name], *_prom_buckets(p.lat.total))
            received.add_metric([], float(self.reports))
            invalid.add_metric([], float(self.invalid_reports))
        return [
            *counters.values(),
            *gauges.values(),
            step_lat,
            pipe_lat,
            up,
            age,
            restarts,
            dropped,
            *rescale.values(),
            received,
            invalid,
        ]


def _prune(d: deque, horizon: float) -> None:
    while d and d[0][0] < horizon:
        d.popleft()


def _prom_buckets(h: Histogram) -> tuple[list[tuple[str, float]], float]:
    from prometheus_client.utils import floatToGoString

    buckets = []
    acc = 0
    for bound, c in zip(h.bounds, h.counts, strict=False):
        acc += c
        buckets.append((floatToGoString(bound), float(acc)))
    buckets.append(("+Inf", float(h.total)))
    return buckets, h.sum


# --- snapshot building ---------------------------------------------------------------


def _throughput(points: list[list[Any]], with_series: bool) -> dict[str, Any]:
    values = [v for _, v in points if v is not None]
    out: dict[str, Any] = {
        "last": values[-1] if values else None,
        "min": min(values) if values else None,
        "median": _r(statistics.median(values)) if values else None,
        "max": max(values) if values else None,
    }
    if with_series:
        out["series"] = points
    return out


def _latency(rows: list[list], window: Histogram, with_series: bool) -> dict[str, Any]:
    last = rows[-1] if rows else None
    out: dict[str, Any] = {
        "last": dict(zip((label for label, _ in PERCENTILES), last[1:], strict=True))
        if last
        else None,
        "last_time": last[0] if last else None,
        "window": _pct(window),
        "count": window.total,
        "mean": _r(window.mean(), 9),
    }
    if with_series:
        out["series"] = rows
    return out


class _Snapshot:
    """One /api/metrics document, built under the state's lock."""

    def __init__(self, state: HubState, now: float, mode: str) -> None:
        self.st = state
        self.now = now
        self.charts = mode in ("all", "charts")  # the series the page draws
        self.all = mode == "all"  # and the others
        self.B = state.bucket
        self.first_b = math.floor((now - state.window) / self.B) + 1  # wholly in the window
        self.stale = {id(w): state.is_stale(w, now) for w in state.workers.values()}

    def _horizon(self, workers: Iterable[_Worker]) -> float:
        """Buckets ending by then are complete: every live member reported past them."""
        ws = list(workers)
        live = [w.last_seen for w in ws if not self.stale[id(w)]]
        if live:
            return min(live)
        return max((w.last_seen for w in ws), default=self.now)

    def rates(self, members: list[tuple[_Worker, _StepSeries]], field: int, series: bool):
        """Members' time-weighted mean rates per complete bucket, summed (field 0: records
        in, 1: records out)."""
        B = self.B
        last_b = math.floor(self._horizon(w for w, _ in members) / B + 1e-9) - 1
        first_b = self.first_b
        total: dict[int, float] = {}
        for _, s in members:
            for b, acc in s.rb.items():
                if first_b <= b <= last_b and acc[2] > 1e-9:
                    total[b] = total.get(b, 0.0) + acc[field] / acc[2]
        points = (
            [[round((b + 1) * B, 3), _r(total.get(b))] for b in range(min(total), max(total) + 1)]
            if total
            else []
        )
        return _throughput(points, series)

    def latency(self, agg: _BucketLatency | None, workers: Iterable[_Worker]) -> dict:
        if agg is None:
            return _latency([], Histogram(), self.charts)
        horizon = self._horizon(workers) + 1e-9
        B = self.B
        rows = [agg.row(b, B) for b in sorted(agg.buckets) if (b + 1) * B <= horizon]
        return _latency(rows, agg.window, self.charts)

    def build(self) -> dict[str, Any]:
        st = self.st
        workers = sorted(st.workers.values(), key=lambda w: (w.app, w.name))
        order = st._order
        steps: dict[tuple[str, str], list[tuple[_Worker, _StepSeries]]] = {}
        pipes: dict[tuple[str, str], dict[str, list]] = {}

        def pipe_entry(app: str, name: str) -> dict[str, list]:
            return pipes.setdefault((app, name), {"src": [], "sink": [], "lat": []})

        for w in workers:
            for s in w.steps.values():
                steps.setdefault((w.app, s.id), []).append((w, s))
                if s.pipeline and s.kind in ("source", "sink"):
                    pipe_entry(w.app, s.pipeline)["src" if s.kind == "source" else "sink"].append(
                        (w, s)
                    )
                elif s.pipeline:
                    pipe_entry(w.app, s.pipeline)
            for p in w.pipes.values():
                pipe_entry(w.app, p.name)["lat"].append(w)

        def rank(app: str, key: str) -> tuple[str, int]:
            return app, order.get((app, key), len(order))

        out_workers = []
        for w in workers:
            srcs = [(w, s) for s in w.steps.values() if s.kind == "source"]
            sinks = [(w, s) for s in w.steps.values() if s.kind == "sink"]
            stale = self.stale[id(w)]
            out_workers.append(
                {
                    "app": w.app,
                    "worker": w.name,
                    "up": not stale,
                    "stale": stale,
                    "last_report": round(w.last_seen, 3),
                    "age": round(max(0.0, self.now - w.last_seen), 3),
                    "interval": w.interval,
                    "reports": w.reports,
                    "restarts": w.restarts,
                    "dropped_reports": w.dropped_reports,
                    "cluster": w.cluster,
                    "steps": sorted(w.steps, key=lambda sid, w=w: rank(w.app, sid)),
                    "ingest": self.rates(srcs, 1, self.charts),
                    "output": self.rates(sinks, 1, self.all),
                }
            )

        out_pipes = []
        for (app, name), e in sorted(pipes.items(), key=lambda kv: rank(kv[0][0], "|" + kv[0][1])):
            names = {w.name for w, _ in e["src"] + e["sink"]} | {w.name for w in e["lat"]}
            out_pipes.append(
                {
                    "app": app,
                    "name": name,
                    "workers": sorted(names),
                    "ingest": self.rates(e["src"], 1, self.charts),
                    "output": self.rates(e["sink"], 1, self.charts),
                    "latency": self.latency(st.agg_lat.get((app, "pipe", name)), e["lat"]),
                }
            )

        out_steps = []
        for (app, sid), members in sorted(steps.items(), key=lambda kv: rank(*kv[0])):
            s0 = members[-1][1]
            live = [(w, s) for w, s in members if not self.stale[id(w)] and s.seen >= w.last_seen]
            per_worker = []
            for w, s in members:
                per_worker.append(
                    {
                        "worker": w.name,
                        "key": f"{sid}@{w.name}",
                        "stale": self.stale[id(w)],
                        **s.cum,
                        **s.gauges,
                        "throughput": _throughput([p[6] for p in s.rates], self.charts),
                        "input": _throughput([p[5] for p in s.rates], self.all),
                        "latency": _latency(
                            [row for _, _, row in s.lat.points], s.lat.window, self.all
                        ),
                    }
                )
            out_steps.append(
                {
                    "app": app,
                    "id": sid,
                    "name": s0.name,
                    "kind": s0.kind,
                    "pipeline": s0.pipeline,
                    "workers": [w.name for w, _ in members],
                    **{k: sum(s.cum[k] for _, s in members) for k in COUNTERS},
                    **{k: sum(s.gauges[k] for _, s in live) for k in GAUGES},
                    "throughput": self.rates(members, 1, self.charts),
                    "input": self.rates(members, 0, self.all),
                    "latency": self.latency(
                        st.agg_lat.get((app, "step", sid)), (w for w, _ in members)
                    ),
                    "per_worker": per_worker,
                }
            )

        return {
            "v": 1,
            "time": round(self.now, 3),
            "window": st.window,
            "bucket": st.bucket,
            "percentiles": [label for label, _ in PERCENTILES],
            "hub": {
                "started": round(st.started, 3),
                "reports": st.reports,
                "invalid_reports": st.invalid_reports,
                "connections": st.connections,
            },
            "apps": sorted({w.app for w in workers}),
            "pipelines": out_pipes,
            "workers": out_workers,
            "steps": out_steps,
        }


# --- the server ----------------------------------------------------------------------


class _StateCollector:
    """A prometheus_client collector over a HubState."""

    def __init__(self, state: HubState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        yield from self.state.prometheus_families()


def _bind(host: str, port: int) -> socket.socket:
    family, type_, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {_fmt((host, port))}: {e.strerror}") from e
    sock.setblocking(False)
    return sock


def _fmt(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Hub:
    """The report listener and the HTTP server over one :class:`HubState`, in one asyncio
    loop. In-process use (tests, the demo)::

        with Hub(("127.0.0.1", 0), ("127.0.0.1", 0)) as hub:   # runs in a thread
            ... hub.report_address, hub.http_address, hub.url ...

    ``actorflow metrics`` runs the same loop in the main thread (:meth:`serve`).
    """

    def __init__(
        self,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        http: tuple[str, int] = ("127.0.0.1", 0),
        *,
        window: float = 300.0,
        bucket: float = 1.0,
    ) -> None:
        self.listen = listen
        self.http = http
        self.state = HubState(window=window, bucket=bucket)
        self.report_address: tuple[str, int] | None = None
        self.http_address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._runner: Any = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.http_address is not None, "the hub is not started"
        return f"http://{_fmt(self.http_address)}/"

    def banner(self) -> str:
        assert self.report_address is not None
        return f"metrics hub: reports on {_fmt(self.report_address)}, page on {self.url}"

    # asyncio side ----------------------------------------------------------------------

    async def start_async(self) -> None:
        """Bind both ports and start serving in the running loop."""
        from aiohttp import web
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_StateCollector(self.state))  # type: ignore[arg-type]
        report_sock = _bind(*self.listen)
        try:
            http_sock = _bind(*self.http)
        except OSError:
            report_sock.close()
            raise
        try:
            self._server = await asyncio.start_server(self._serve_reports, sock=report_sock)
            self.report_address = report_sock.getsockname()[:2]
            app = web.Application()
            app.router.add_get("/", self._index)
            app.router.add_get("/index.html", self._index)
            app.router.add_get("/api/metrics", self._api)
            app.router.add_get("/metrics", self._prometheus)
            app.router.add_static("/static/", STATIC_DIR)
            app.on_response_prepare.append(_no_cache)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.SockSite(self._runner, http_sock).start()
            self.http_address = http_sock.getsockname()[:2]
        except BaseException:
            await self.stop_async()
            report_sock.close()
            http_sock.close()
            raise

    async def stop_async(self) -> None:
        if self._server is not None:
            self._server.close()
        for wr in list(self._writers):
            wr.close()
        if self._tasks:  # closed connections end their readers; cancel any laggard
            _, pending = await asyncio.wait(list(self._tasks), timeout=2)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_reports(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.state.connections += 1
        peer = writer.get_extra_info("peername")
        rr = ReportReader()
        warned = False
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                try:
                    reports = rr.feed(data)
                except ReportError as e:
                    with self.state._lock:
                        self.state.invalid_reports += 1
                    log.warning("metrics: closing the connection from %s: %s", peer, e)
                    break
                for r in reports:
                    try:
                        self.state.ingest(r)
                    except ReportError as e:
                        if not warned:
                            log.warning("metrics: a report from %s is refused: %s", peer, e)
                            warned = True
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # stopping; end normally (asyncio 3.11 logs a cancelled handler task)
        finally:
            self.state.connections -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        return web.FileResponse(STATIC_DIR / "index.html")

    async def _api(self, request: Any) -> Any:
        from aiohttp import web

        series = request.query.get("series", "all").lower()
        series = {"0": "none", "false": "none", "no": "none", "1": "all", "true": "all"}.get(
            series, series
        )
        if series not in SERIES_MODES:
            raise web.HTTPBadRequest(text=f"series must be one of {', '.join(SERIES_MODES)}\n")
        data = self.state.snapshot(series=series)
        return web.json_response(data, dumps=_dumps)

    async def _prometheus(self, request: Any) -> Any:
        from aiohttp import web
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def serve(self, ready: Callable[[Hub], None] | None = None) -> None:
        """Start, call ``ready``, and serve until SIGINT/SIGTERM (main thread)."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await self.start_async()
        try:
            if ready is not None:
                ready(self)
            await stop.wait()
        finally:
            await self.stop_async()

    # thread side -----------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> Hub:
        """Run the hub in a background thread; returns once both ports are bound."""
        started = threading.Event()
        error: list[BaseException] = []
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                error.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.stop_async())
            loop.close()

        self._thread = threading.Thread(target=run, name="metrics-hub", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("the metrics hub did not start")
        if error:
            self._thread.join()
            self._thread = None
            raise error[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> Hub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _no_cache(request: Any, response: Any) -> None:
    response.headers["Cache-Control"] = "no-cache"


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


# --- the command ---------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    from actorflow.tools.framing import parse_address

    try:
        return parse_address(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Receive the workers' metrics reports (their --metrics address) and serve a live "
        "page, Prometheus metrics (/metrics) and JSON (/api/metrics)."
    )
    p.add_argument(
        "--listen",
        type=_address,
        default=("127.0.0.1", 5001),
        metavar="H:P",
        help="where workers send reports (default 127.0.0.1:5001; port 0: any free port)",
    )
    p.add_argument(
        "--http",
        type=_address,
        default=("127.0.0.1", 4000),
        metavar="H:P",
        help="the page, /metrics and /api/metrics (default 127.0.0.1:4000; port 0: any)",
    )
    p.add_argument(
        "--window",
        type=_positive,
        default=300.0,
        metavar="S",
        help="seconds of history kept and shown (default 300)",
    )
    p.add_argument(
        "--bucket",
        type=_positive,
        default=1.0,
        metavar="S",
        help="time bucket of the sums across workers, in seconds (default 1)",
    )


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="actorflow metrics: %(message)s"
    )
    hub = Hub(args.listen, args.http, window=args.window, bucket=args.bucket)

    def ready(h: Hub) -> None:
        print(h.banner(), flush=True)

    try:
        asyncio.run(hub.serve(ready))
    except OSError as e:
        print(f"actorflow metrics: {e}", file=sys.stderr)
        return 1
    return 0
