"""The metrics report format and the hub: histograms, frames, aggregation, HTTP endpoints."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from bisect import bisect_left

import pytest

from actorflow.metrics.hub import Hub, HubState
from actorflow.metrics.report import (
    LATENCY_BOUNDS,
    MAX_FRAME,
    Histogram,
    ReportError,
    ReportReader,
    check_report,
    decode_reports,
    encode_report,
)
from actorflow.processes import die_with_parent

prom_parser = pytest.importorskip("prometheus_client.parser")

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def expected_percentile(values: list[float], q: float) -> float:
    """The upper bound of the bin holding the q-quantile, computed by sorting."""
    v = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    i = bisect_left(LATENCY_BOUNDS, v)
    return LATENCY_BOUNDS[i] if i < len(LATENCY_BOUNDS) else math.inf


# --- Histogram ------------------------------------------------------------------------


def test_bounds_are_log_scale_from_10us_to_20s():
    assert len(LATENCY_BOUNDS) == 22
    assert LATENCY_BOUNDS[0] == 1e-5
    assert 20 < LATENCY_BOUNDS[-1] < 21
    for a, b in zip(LATENCY_BOUNDS, LATENCY_BOUNDS[1:], strict=False):
        assert b == pytest.approx(2 * a)
    assert len(Histogram().counts) == 23


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_sorting(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(-6, 1.5) for _ in range(rng.randint(1, 5000))]
    values += [30.0] * rng.randint(0, 3)  # some overflow
    h = Histogram.of(values)
    assert h.total == len(values)
    assert h.sum == pytest.approx(sum(values))
    for q in QUANTILES:
        assert h.percentile(q) == expected_percentile(values, q), q
    assert h.percentile(1.0) == expected_percentile(values, 1.0)
    assert h.percentiles() == {
        label: expected_percentile(values, q)
        for label, q in zip(["p50", "p90", "p95", "p99", "p99.9"], QUANTILES, strict=True)
    }


def test_histogram_edges():
    h = Histogram()
    assert h.percentile(0.5) is None
    assert h.percentiles() == dict.fromkeys(["p50", "p90", "p95", "p99", "p99.9"])
    h.record(1e-5)  # on a bound: counted in that bin (upper bounds are inclusive)
    assert h.counts[0] == 1 and h.percentile(0.99) == 1e-5
    h.record(0.0)
    assert h.counts[0] == 2
    h.record(1e6)
    assert h.counts[-1] == 1 and h.percentile(1.0) == math.inf
    h2 = Histogram()
    h2.record(0.003, count=99)  # a batch of 99 records
    h2.record(0.5)
    assert h2.total == 100
    assert h2.percentile(0.99) == expected_percentile([0.003] * 99 + [0.5], 0.99)
    assert h2.percentile(0.999) == expected_percentile([0.003] * 99 + [0.5], 0.999)


def test_merge_take_and_wire():
    rng = random.Random(7)
    a_vals = [rng.expovariate(100) for _ in range(300)]
    b_vals = [rng.expovariate(10) for _ in range(200)]
    a, b = Histogram.of(a_vals), Histogram.of(b_vals)
    merged = a.copy().merge(b)
    assert merged == Histogram.of(a_vals + b_vals)
    assert merged.total == 500
    for q in QUANTILES:
        assert merged.percentile(q) == expected_percentile(a_vals + b_vals, q)

    assert merged.copy().subtract(b) == a
    assert merged.copy().subtract(merged).total == 0

    taken = a.take()
    assert taken == Histogram.of(a_vals) and taken.total == 300
    assert a.total == 0 and sum(a.counts) == 0 and a.sum == 0
    a.record(0.001)
    assert a.take().total == 1 and taken.total == 300  # independent of what came later

    wire = merged.to_wire()
    assert set(wire) <= {"counts", "sum"}
    assert json.loads(json.dumps(wire)) == wire
    back = Histogram.from_wire(wire)
    assert back == merged and back.total == merged.total
    assert back.sum == pytest.approx(merged.sum)
    assert Histogram().to_wire() == {"counts": []}  # trailing zeros left out
    assert Histogram.from_wire({"counts": [0, 2]}).counts[:3] == [0, 2, 0]
    assert Histogram.from_wire(None).total == 0

    coarse = Histogram.from_wire({"bounds": [0.001, 0.1], "counts": [5, 3, 1]})
    fine = coarse.rebinned()
    assert fine.total == 9
    assert fine.counts[bisect_left(LATENCY_BOUNDS, 0.001)] == 5
    assert fine.counts[bisect_left(LATENCY_BOUNDS, 0.1)] == 3
    assert fine.counts[-1] == 1
    assert Histogram().merge(coarse).total == 9


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        {"counts": [1, -1]},
        {"counts": [1.5]},
        {"counts": [0] * 24},
        {"counts": "x"},
        {"counts": [1], "sum": "x"},
        {"bounds": [2, 1], "counts": []},
    ],
)
def test_histogram_from_wire_refuses_malformed(bad):
    with pytest.raises(ReportError):
        Histogram.from_wire(bad)


# --- reports and frames ---------------------------------------------------------------


def make_step(sid, kind, count, *, pipeline="p", lat=None, errors=0, buffered=0, held=0):
    return {
        "id": sid,
        "name": f"{sid} step",
        "kind": kind,
        "pipeline": pipeline,
        "records_in": count,
        "records_out": count,
        "errors": errors,
        "batches_in": count // 100,
        "batches_out": count // 100,
        "buffered": buffered,
        "held_acks": held,
        "latency": (lat or Histogram()).to_wire(),
    }


def make_report(worker, t, steps, *, app="app", interval=1.0, pipelines=(), dropped=0):
    return {
        "v": 1,
        "app": app,
        "worker": worker,
        "time": t,
        "interval": interval,
        "steps": list(steps),
        "pipelines": list(pipelines),
        "dropped_reports": dropped,
    }


def test_report_round_trip_and_partial_frames():
    h = Histogram.of([0.001, 0.002, 0.5])
    reports = [
        make_report("w1", 100.0 + i, [make_step("s", "state", 10 * i, lat=h)]) for i in range(5)
    ]
    reports[2]["worker"] = "wörker ✓"  # UTF-8
    data = b"".join(encode_report(r) for r in reports)
    assert int.from_bytes(data[:4], "big") == len(encode_report(reports[0])) - 4
    got, rest = decode_reports(data)
    assert got == reports and rest == b""
    # cut anywhere: complete frames come out, the rest is kept
    for cut in (1, 3, 4, 10, len(data) - 1):
        got, rest = decode_reports(data[:cut])
        got2, rest2 = decode_reports(rest + data[cut:])
        assert got + got2 == reports and rest2 == b""
    # byte by byte through a reader
    reader = ReportReader()
    out = []
    for i in range(len(data)):
        out += reader.feed(data[i : i + 1])
    assert out == reports and reader.pending == 0
    # Histogram objects are encoded in their wire form
    (one,), _ = decode_reports(encode_report({"latency": h}))
    assert Histogram.from_wire(one["latency"]) == h
    assert check_report(reports[1])["steps"][0]["latency"] == h
    del reports[1]["steps"][0]["latency"]
    assert check_report(reports[1])["steps"][0]["latency"] == Histogram()


def test_bad_frames_are_refused():
    with pytest.raises(ReportError):
        decode_reports((MAX_FRAME + 1).to_bytes(4, "big") + b"x")
    with pytest.raises(ReportError):
        decode_reports((3).to_bytes(4, "big") + b"{x}")
    with pytest.raises(ReportError):
        decode_reports((2).to_bytes(4, "big") + b"[]")
    assert decode_reports(b"\x00\x00") == ([], b"\x00\x00")


def test_check_report_normalizes_and_refuses():
    r = check_report(
        {"v": 1, "app": "a", "worker": "w", "time": 5, "interval": 1, "steps": [{"id": "x"}]}
    )
    s = r["steps"][0]
    assert s["name"] == "x" and s["records_in"] == 0 and s["latency"].total == 0
    assert r["pipelines"] == [] and r["dropped_reports"] == 0
    good = make_report("w", 1.0, [make_step("s", "source", 1)])
    for mutate in (
        lambda d: d.update(v=2),
        lambda d: d.update(worker=""),
        lambda d: d.update(time="now"),
        lambda d: d.update(interval=0),
        lambda d: d["steps"][0].update(records_in=-1),
        lambda d: d["steps"][0].update(records_out=1.5),
        lambda d: d["steps"].append(dict(d["steps"][0])),
        lambda d: d.update(steps={}),
    ):
        bad = json.loads(json.dumps(good))
        mutate(bad)
        with pytest.raises(ReportError):
            check_report(bad)


# --- aggregation ----------------------------------------------------------------------

T0 = 1_700_000_000.0


class Feed:
    """Synthetic workers: cumulative counters advanced by rate * interval per report."""

    def __init__(self, state: HubState) -> None:
        self.state = state
        self.counts: dict[tuple[str, str], int] = {}

    def send(self, worker, t, rates, *, interval=1.0, lat=None, delay=0.05, dropped=0, **kw):
        steps = []
        for sid, (kind, rate) in rates.items():
            c = self.counts[worker, sid] = self.counts.get((worker, sid), 0) + round(
                rate * interval
            )
            steps.append(make_step(sid, kind, c, lat=lat, **kw))
        r = make_report(worker, t, steps, interval=interval, dropped=dropped)
        return self.state.ingest(r, now=t + delay)


def by_key(items, **match):
    for it in items:
        if all(it.get(k) == v for k, v in match.items()):
            return it
    raise KeyError(match)


def test_rates_from_cumulative_counters():
    st = HubState(window=60)
    f = Feed(st)
    rates = {"src": ("source", 1000), "st": ("state", 1000), "out": ("sink", 900)}
    for i in range(10):
        f.send("w1", T0 + i, rates)
    snap = st.snapshot(now=T0 + 9.5)
    step = by_key(snap["steps"], id="st")
    pw = step["per_worker"][0]
    assert pw["key"] == "st@w1"
    assert pw["records_in"] == pw["records_out"] == 10_000
    # the first report is the baseline: one point per later report
    assert [v for _, v in pw["throughput"]["series"]] == [1000.0] * 9
    assert pw["throughput"]["last"] == pw["throughput"]["min"] == pw["throughput"]["max"] == 1000
    assert step["throughput"]["last"] == 1000
    assert {v for _, v in step["throughput"]["series"]} == {1000.0}
    w = by_key(snap["workers"], worker="w1")
    assert w["ingest"]["last"] == 1000 and w["output"]["last"] == 900
    assert w["up"] and not w["stale"] and w["reports"] == 10 and w["restarts"] == 0
    assert w["steps"] == ["src", "st", "out"]
    p = by_key(snap["pipelines"], name="p")
    assert p["ingest"]["last"] == 1000 and p["output"]["last"] == 900


def test_sums_across_unsynchronized_workers():
    """Workers report at different moments and intervals; sums per bucket are exact."""
    st = HubState(window=120)
    f = Feed(st)
    rates1 = {"src": ("source", 1000), "st": ("state", 1000), "out": ("sink", 1000)}
    rates2 = {"src": ("source", 3000), "st": ("state", 3000), "out": ("sink", 3000)}
    events = [(T0 + i, "w1", rates1, 1.0) for i in range(40)]
    events += [(T0 + 0.37 + 2 * i, "w2", rates2, 2.0) for i in range(20)]
    for t, w, r, interval in sorted(events, key=lambda e: e[0]):
        f.send(w, t, r, interval=interval)
    snap = st.snapshot(now=T0 + 40)
    for sid in ("src", "st", "out"):
        step = by_key(snap["steps"], id=sid)
        values = [v for _, v in step["throughput"]["series"]]
        assert len(values) > 30
        assert values == pytest.approx([4000.0] * len(values)), sid
        assert step["throughput"]["min"] == step["throughput"]["max"] == 4000
        assert step["workers"] == ["w1", "w2"]
        assert step["records_out"] == 40 * 1000 + 20 * 2 * 3000
        pw = {x["worker"]: x for x in step["per_worker"]}
        assert pw["w1"]["throughput"]["last"] == 1000
        assert pw["w2"]["throughput"]["last"] == 3000
    p = by_key(snap["pipelines"], name="p")
    assert p["ingest"]["last"] == pytest.approx(4000)
    assert p["output"]["median"] == pytest.approx(4000)
    assert p["workers"] == ["w1", "w2"]
    assert by_key(snap["workers"], worker="w2")["ingest"]["last"] == 3000


def test_min_median_max_over_the_window():
    st = HubState(window=300)
    f = Feed(st)
    pattern = [500, 1500, 1000, 4000, 2000, 3000]
    f.send("w1", T0, {"s": ("source", 0)}, delay=0)
    for i, rate in enumerate(pattern, start=1):  # received on bucket edges: buckets = points
        f.send("w1", T0 + i, {"s": ("source", rate)}, delay=0)
    snap = st.snapshot(now=T0 + 6.5)
    t = by_key(snap["steps"], id="s")["per_worker"][0]["throughput"]
    assert (t["min"], t["median"], t["max"], t["last"]) == (500, 1750, 4000, 3000)
    agg = by_key(snap["workers"], worker="w1")["ingest"]
    assert (agg["min"], agg["median"], agg["max"]) == (500, 1750, 4000)


def test_counter_reset_after_a_restart_gives_no_negative_rate():
    st = HubState(window=300)
    f = Feed(st)
    for i in range(5):
        f.send("w1", T0 + i, {"s": ("source", 2000)})
    f.counts.clear()  # the worker restarts: its counters start again from zero
    for i in range(6, 10):
        f.send("w1", T0 + i, {"s": ("source", 500)})
    snap = st.snapshot(now=T0 + 9.5)
    w = by_key(snap["workers"], worker="w1")
    assert w["restarts"] == 1
    pw = by_key(snap["steps"], id="s")["per_worker"][0]
    values = [v for _, v in pw["throughput"]["series"]]
    assert min(values) >= 0
    assert values == [2000.0] * 4 + [500.0] * 4
    assert pw["records_out"] == 4 * 500
    agg = [v for _, v in w["ingest"]["series"] if v is not None]
    assert min(agg) >= 0 and max(agg) <= 2000
    assert w["ingest"]["last"] == 500


def test_stale_workers_and_forgetting():
    st = HubState(window=30)
    f = Feed(st)
    rates = {"s": ("state", 100)}
    for i in range(10):
        f.send("w1", T0 + i, rates, buffered=7, held=2)
        if i < 5:
            f.send("w2", T0 + i, rates, buffered=5, held=1)
    snap = st.snapshot(now=T0 + 9.5)
    w1, w2 = by_key(snap["workers"], worker="w1"), by_key(snap["workers"], worker="w2")
    assert w1["up"] and not w1["stale"]
    assert w2["stale"] and not w2["up"]  # silent for 5 s > 3 intervals
    assert w2["age"] == pytest.approx(5.45)
    step = by_key(snap["steps"], id="s")
    assert step["buffered"] == 7 and step["held_acks"] == 2  # gauges: live workers only
    assert by_key(step["per_worker"], worker="w2")["stale"]
    # a stale worker no longer holds back the sums: recent buckets show w1 alone
    assert step["throughput"]["last"] == 100
    assert 200 in [v for _, v in step["throughput"]["series"]]
    # just before 3 intervals it is still up
    assert by_key(st.snapshot(now=T0 + 4.05 + 2.9)["workers"], worker="w2")["up"]
    fams = {m.name: m for m in st.prometheus_families(now=T0 + 9.5)}
    up = {s.labels["worker"]: s.value for s in fams["actorflow_worker_up"].samples}
    assert up == {"w1": 1.0, "w2": 0.0}
    # forgotten after a window of silence
    snap = st.snapshot(now=T0 + 4.05 + 31)
    assert [w["worker"] for w in snap["workers"]] == ["w1"]
    assert by_key(snap["steps"], id="s")["workers"] == ["w1"]


def test_history_is_bounded():
    st = HubState(window=10)
    f = Feed(st)
    lat = Histogram.of([0.001])
    for i in range(1000):
        f.send("w1", T0 + i, {"s": ("source", 10)}, lat=lat)
    w = st.workers["app", "w1"]
    assert len(w.steps["s"].rates) <= 11 and len(w.steps["s"].lat.points) <= 11
    assert len(w.steps["s"].rb) <= 12 and len(st.agg_lat["app", "step", "s"].buckets) <= 12
    snap = st.snapshot(now=T0 + 999.5)
    pw = by_key(snap["steps"], id="s")["per_worker"][0]
    assert len(pw["throughput"]["series"]) <= 11
    assert len(by_key(snap["steps"], id="s")["throughput"]["series"]) <= 11
    assert pw["latency"]["count"] <= 11
    # the cap holds even for a worker that reports far faster than it should
    assert w.steps["s"].rates.maxlen <= 10 / 0.1 + 2
    # Prometheus histograms count everything since the hub started
    fams = {m.name: m for m in st.prometheus_families(now=T0 + 999.5)}
    count = [
        s.value for s in fams["actorflow_step_latency_seconds"].samples if s.name.endswith("_count")
    ]
    assert count == [1000.0]


def test_latency_aggregation():
    st = HubState(window=60)
    rng = random.Random(3)
    all_vals: dict[str, list[float]] = {"w1": [], "w2": []}
    pipe_vals: list[float] = []
    for i in range(10):
        for w, scale in (("w1", 0.001), ("w2", 0.01)):
            vals = [rng.expovariate(1 / scale) for _ in range(50)]
            all_vals[w] += vals
            pv = [rng.expovariate(1 / (scale * 5)) for _ in range(20)]
            pipe_vals += pv
            r = make_report(
                w,
                T0 + i,
                [make_step("s", "state", 10 * i, lat=Histogram.of(vals))],
                pipelines=[{"name": "p", "latency": Histogram.of(pv).to_wire()}],
            )
            st.ingest(r, now=T0 + i + 0.01)
    snap = st.snapshot(now=T0 + 10)
    step = by_key(snap["steps"], id="s")
    both = all_vals["w1"] + all_vals["w2"]
    for q, label in zip(QUANTILES, snap["percentiles"], strict=True):
        assert step["latency"]["window"][label] == expected_percentile(both, q)
        w2 = by_key(step["per_worker"], worker="w2")["latency"]["window"][label]
        assert w2 == expected_percentile(all_vals["w2"], q)
    assert step["latency"]["count"] == 1000
    assert step["latency"]["mean"] == pytest.approx(sum(both) / len(both), rel=1e-6)
    row = by_key(step["per_worker"], worker="w1")["latency"]["series"][-1]
    assert len(row) == 6 and row[1] <= row[2] <= row[3] <= row[4] <= row[5]
    p = by_key(snap["pipelines"], name="p")
    assert p["latency"]["window"]["p99"] == expected_percentile(pipe_vals, 0.99)
    assert p["latency"]["count"] == len(pipe_vals)
    assert len(p["latency"]["series"]) >= 9


def test_invalid_reports_are_counted():
    st = HubState()
    with pytest.raises(ReportError):
        st.ingest({"v": 1, "app": "a"})
    assert st.invalid_reports == 1 and st.reports == 0
    assert st.snapshot()["hub"]["invalid_reports"] == 1


# --- the hub over real sockets --------------------------------------------------------


def http_get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def wait_api(base: str, until, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = json.loads(http_get(base + "api/metrics")[2])
        if until(data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"the hub never got there: {json.dumps(data)[:2000]}")
        time.sleep(0.05)


def test_hub_over_tcp_and_http():
    lat = Histogram.of([0.002] * 8 + [0.05, 0.3])
    with Hub(("127.0.0.1", 0), ("127.0.0.1", 0), window=60) as hub:
        assert hub.report_address[1] > 0 and hub.http_address[1] > 0
        base = hub.url
        t = time.time() - 10
        socks = {w: socket.create_connection(hub.report_address) for w in ("w1", "w2")}
        try:
            for i in range(6):
                for w, rate in (("w1", 1000), ("w2", 3000)):
                    steps = [
                        make_step("src", "source", rate * i),
                        make_step("st", "state", rate * i, lat=lat, errors=i, buffered=3),
                        make_step("out", "sink", rate * i),
                    ]
                    pipes = [{"name": "p", "latency": lat.to_wire()}]
                    frame = encode_report(make_report(w, t + i, steps, pipelines=pipes))
                    socks[w].sendall(frame[:7])  # split frames arrive whole
                    socks[w].sendall(frame[7:])
            socks["w1"].sendall(b"\x00\x00\x00\x02{}")  # a frame, not a valid report
            data = wait_api(base, lambda d: d["hub"]["reports"] == 12)
        finally:
            for s in socks.values():
                s.close()
        assert data["hub"]["invalid_reports"] == 1
        assert data["apps"] == ["app"]
        assert [w["worker"] for w in data["workers"]] == ["w1", "w2"]
        step = by_key(data["steps"], id="st")
        pw = {x["key"]: x for x in step["per_worker"]}
        assert pw["st@w1"]["throughput"]["last"] == 1000
        assert pw["st@w2"]["throughput"]["last"] == 3000
        assert pw["st@w2"]["records_out"] == 15000 and pw["st@w2"]["errors"] == 5
        assert step["latency"]["window"]["p50"] == expected_percentile([0.002], 0.5)
        assert step["latency"]["count"] == 120
        slim = json.loads(http_get(base + "api/metrics?series=none")[2])
        assert "series" not in by_key(slim["steps"], id="st")["throughput"]
        assert slim["steps"] == json.loads(http_get(base + "api/metrics?series=0")[2])["steps"]
        charts = json.loads(http_get(base + "api/metrics?series=charts")[2])
        cstep = by_key(charts["steps"], id="st")
        assert "series" in cstep["throughput"] and "series" in cstep["latency"]
        assert "series" in cstep["per_worker"][0]["throughput"]
        assert "series" not in cstep["per_worker"][0]["latency"]
        assert "series" not in cstep["input"]
        with pytest.raises(urllib.error.HTTPError) as err:
            http_get(base + "api/metrics?series=some")
        err.value.close()
        assert err.value.code == 400

        status, ctype, body = http_get(base + "metrics")
        assert status == 200 and ctype.startswith("text/plain")
        fams = {f.name: f for f in prom_parser.text_string_to_metric_families(body.decode())}
        assert fams["actorflow_step_records_in"].type == "counter"
        rec = {
            (s.labels["worker"], s.labels["step"]): s.value
            for s in fams["actorflow_step_records_out"].samples
        }
        assert rec[("w1", "st")] == 5000 and rec[("w2", "src")] == 15000
        sample = next(
            s
            for s in fams["actorflow_step_records_in"].samples
            if s.labels["worker"] == "w2" and s.labels["step"] == "st"
        )
        assert sample.name == "actorflow_step_records_in_total"
        assert sample.labels == {
            "app": "app",
            "worker": "w2",
            "pipeline": "p",
            "step": "st",
            "name": "st step",
            "kind": "state",
        }
        errors = {
            s.labels["worker"]: s.value
            for s in fams["actorflow_step_errors"].samples
            if s.labels["step"] == "st"
        }
        assert errors == {"w1": 5.0, "w2": 5.0}
        buffered = [s.value for s in fams["actorflow_step_buffered"].samples]
        assert sorted(buffered) == [0.0] * 4 + [3.0] * 2
        hist = fams["actorflow_step_latency_seconds"]
        assert hist.type == "histogram"
        w1 = [s for s in hist.samples if s.labels["worker"] == "w1" and s.labels["step"] == "st"]
        buckets = {s.labels["le"]: s.value for s in w1 if s.name.endswith("_bucket")}
        assert buckets["+Inf"] == 60 and buckets["0.00256"] == 48 and buckets["0.08192"] == 54
        assert next(s.value for s in w1 if s.name.endswith("_count")) == 60
        assert next(s.value for s in w1 if s.name.endswith("_sum")) == pytest.approx(6 * lat.sum)
        pipe = fams["actorflow_pipeline_latency_seconds"]
        assert {s.labels["pipeline"] for s in pipe.samples} == {"p"}
        assert {s.labels["worker"]: s.value for s in fams["actorflow_worker_up"].samples} == {
            "w1": 1.0,
            "w2": 1.0,
        }
        assert [s.value for s in fams["actorflow_reports_dropped"].samples] == [0.0, 0.0]
        assert fams["actorflow_hub_reports_invalid"].samples[0].value == 1

        status, ctype, body = http_get(base)
        assert status == 200 and ctype.startswith("text/html") and b"/static/app.js" in body
        for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
            status, ctype, body = http_get(base + "static/" + name)
            assert status == 200 and kind in ctype and len(body) > 1000
    # stopped: both ports are closed
    with pytest.raises(OSError):
        socket.create_connection(hub.http_address, timeout=2).close()


def test_hub_refuses_a_port_in_use():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            Hub(("127.0.0.1", 0), s.getsockname()).start()


def test_metrics_command_prints_its_addresses_and_stops_on_sigterm():
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "metrics", "--listen", "127.0.0.1:0"]
        + ["--http", "127.0.0.1:0", "--window", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        line = read_line(proc, timeout=20)
        assert line.startswith("metrics hub: reports on 127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        data = json.loads(http_get(url + "api/metrics")[2])
        assert data["window"] == 60 and data["workers"] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first stdout line of proc, or fail with its stderr after timeout."""
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        proc.kill()
        err = proc.stderr.read()
        raise AssertionError(f"no line from the hub (exit {proc.wait()}): {err}")
    return box[0].strip()


def test_usage_errors():
    proc = subprocess.run(
        [sys.executable, "-m", "actorflow", "metrics", "--listen", "nowhere"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 2 and "HOST:PORT" in proc.stderr


def test_late_records_of_window_steps_reach_prometheus():
    # README Windows: late data "is counted in status and metrics".
    st = HubState(window=60)
    window = make_step("win", "state", 1000)
    window.update(late_dropped=7, late_fired=2, late_placed=0)
    st.ingest(make_report("w1", T0, [window, make_step("src", "source", 1000)]), now=T0)
    fams = {f.name: f for f in st.prometheus_families(now=T0)}
    samples = {
        (s.name, s.labels["step"]): s.value
        for k in ("late_dropped", "late_fired", "late_placed")
        for s in fams[f"actorflow_step_{k}"].samples
    }
    assert samples[("actorflow_step_late_dropped_total", "win")] == 7
    assert samples[("actorflow_step_late_fired_total", "win")] == 2
    assert samples[("actorflow_step_late_dropped_total", "src")] == 0, "0 where no windows"


def test_rescale_pauses_reach_prometheus_and_the_page_data():
    # README "Grow and shrink": the metrics page shows how long processing paused.
    st = HubState(window=60)
    figures = {
        "table_version": 2,
        "rescales": 2,
        "last_pause_seconds": 0.42,
        "paused_seconds_total": 0.8,
    }
    report = make_report("w1", T0, [make_step("src", "source", 1000)])
    st.ingest({**report, "cluster": figures}, now=T0)
    st.ingest(make_report("w2", T0, [make_step("src", "source", 1000)]), now=T0)
    fams = {f.name: f for f in st.prometheus_families(now=T0)}
    (pause,) = fams["actorflow_cluster_rescale_pause_seconds"].samples
    assert pause.labels["worker"] == "w1" and pause.value == 0.42
    (total,) = fams["actorflow_cluster_rescales"].samples
    assert total.value == 2
    workers = {w["worker"]: w for w in st.snapshot(now=T0)["workers"]}
    assert workers["w1"]["cluster"]["last_pause_seconds"] == 0.42
    assert workers["w2"]["cluster"] is None
    with pytest.raises(ReportError, match="cluster.rescales"):
        check_report({**report, "cluster": {**figures, "rescales": -1}})
