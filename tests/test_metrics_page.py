"""The metrics page in a real browser: headless Chromium shows the cluster's figures.

Starts ``actorflow metrics`` as a process, feeds it reports of two synthetic workers
over TCP (worker1 at 1000 records/s, worker2 at 3000), then loads the page in headless
Chromium (Debian's ``chromium`` package) and reads the DOM it renders. Skips when no
Chromium is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from actorflow.metrics.report import Histogram, encode_report
from actorflow.processes import die_with_parent, kill_group


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium browser installed (Debian: apt-get install chromium); "
    "the page test needs headless Chromium",
)

INTERVAL = 0.25
RATES = {"worker1": 1000, "worker2": 3000}
STEPS = (
    ("src0", "votes source", "source"),
    ("state1", "add votes", "state"),
    ("sink2", "tcp sink", "sink"),
)


class Feeder(threading.Thread):
    """Two synthetic workers reporting every INTERVAL over real TCP connections, with
    exact rates (the report clock advances by INTERVAL per report) until stopped."""

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def report(self, worker: str, n: int, t0: float) -> bytes:
        rate = RATES[worker]
        lat = Histogram()
        lat.record(0.0015 if worker == "worker1" else 0.006, count=50)
        pipe = Histogram()
        pipe.record(0.02, count=100)
        steps = [
            {
                "id": sid,
                "name": name,
                "kind": kind,
                "pipeline": "votes",
                "records_in": round(rate * INTERVAL * n),
                "records_out": round(rate * INTERVAL * n),
                "errors": 0,
                "batches_in": n,
                "batches_out": n,
                "buffered": 10,
                "held_acks": 1,
                "latency": lat.to_wire(),
            }
            for sid, name, kind in STEPS
        ]
        return encode_report(
            {
                "v": 1,
                "app": "alphabet",
                "worker": worker,
                "time": t0 + n * INTERVAL,
                "interval": INTERVAL,
                "steps": steps,
                "pipelines": [{"name": "votes", "latency": pipe.to_wire()}],
                "dropped_reports": 0,
            }
        )

    def run(self) -> None:
        socks = {w: socket.create_connection(self.address, timeout=5) for w in RATES}
        try:
            t0 = time.time()
            n = 0
            while not self.stopped.is_set():
                n += 1
                for w, s in socks.items():
                    s.sendall(self.report(w, n, t0))
                self.stopped.wait(max(0.0, t0 + n * INTERVAL - time.time()))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        finally:
            for s in socks.values():
                s.close()


def api(url: str) -> dict:
    with urllib.request.urlopen(url + "api/metrics?series=0", timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture
def hub():
    """`actorflow metrics` on free ports; yields (report address, page url)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "metrics", "--listen", "127.0.0.1:0"]
        + ["--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
    )
    try:
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        if not box or not box[0].startswith("metrics hub: reports on "):
            proc.kill()
            pytest.fail(f"the hub did not start: {box} {proc.stderr.read()}")
        words = box[0].split()
        host, port = words[4].rstrip(",").rsplit(":", 1)
        yield (host, int(port)), words[-1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def chromium(tmp_path: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run headless Chromium in its own process group; end the whole group afterwards."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
        env={**os.environ, "TZ": "UTC"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"chromium did not finish in {timeout:g} s: {err[-2000:]!r}")
    finally:
        kill_group(proc.pid, wait=5)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


class Figures(HTMLParser):
    """Every element with a data-metric attribute: its attributes and its text; and
    every canvas chart's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, str]] = []
        self.canvases: dict[str, dict[str, str]] = {}
        self._open: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "canvas" and "id" in a:
            self.canvases[a["id"]] = a
        if "data-metric" in a:
            a["text"] = ""
            self.figures.append(a)
            self._open.append((tag, a))

    def handle_data(self, data):
        for _, a in self._open:
            a["text"] += data

    def handle_endtag(self, tag):
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def find(self, **match: str) -> dict[str, str]:
        m = {k.replace("_", "-"): v for k, v in match.items()}
        found = [f for f in self.figures if all(f.get(k) == v for k, v in m.items())]
        assert len(found) == 1, (match, found)
        return found[0]


def test_page_shows_the_cluster(hub, tmp_path):
    address, url = hub
    feeder = Feeder(address)
    feeder.start()
    try:
        # the hub has the figures (no fixed sleep: poll its API)
        deadline = time.monotonic() + 20
        while True:
            data = api(url)
            steps = {s["id"]: s for s in data["steps"]}
            if "state1" in steps and steps["state1"]["throughput"]["last"] == 4000:
                pw = {p["key"]: p for p in steps["state1"]["per_worker"]}
                if pw["state1@worker1"]["throughput"]["last"] == 1000:
                    break
            assert feeder.error is None, feeder.error
            assert time.monotonic() < deadline, json.dumps(data)[:3000]
            time.sleep(0.1)

        dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
        html = dom.stdout.decode()
        assert "</html>" in html, dom.stderr.decode()[-3000:]
        page = Figures()
        page.feed(html)

        # step throughput per worker and summed over the workers
        for key, rate in (("state1@worker1", 1000), ("state1@worker2", 3000)):
            cell = page.find(data_metric="throughput", data_step=key)
            assert float(cell["data-value"]) == rate and cell["text"] == f"{rate:,}"
            assert page.find(data_metric="throughput-median", data_step=key)["text"] == (
                f"{rate:,}"
            )
        total = page.find(data_metric="throughput", data_step="state1")
        assert float(total["data-value"]) == 4000 and total["text"] == "4,000"
        for sid, _, _ in STEPS:
            assert page.find(data_metric="throughput", data_step=f"{sid}@worker2")["text"] == (
                "3,000"
            )
        # latency percentiles per step and worker
        p99 = page.find(data_metric="latency-p99", data_step="state1@worker1")
        assert float(p99["data-value"]) == 0.00256 and p99["text"] == "2.56 ms"
        # workers: names, status and ingest
        for w, rate in RATES.items():
            assert page.find(data_metric="status", data_worker=w)["text"] == "up"
            ingest = page.find(data_metric="ingest", data_worker=w)
            assert float(ingest["data-value"]) == rate and ingest["text"] == f"{rate:,}"
        # the pipeline: ingest summed over the workers' sources, and its latency
        ing = page.find(data_metric="ingest", data_pipeline="votes")
        assert float(ing["data-value"]) == 4000
        p50 = page.find(data_metric="latency-p50", data_pipeline="votes")
        assert float(p50["data-value"]) == 0.02048 and p50["text"] == "20.5 ms"
        # the charts were drawn with those figures
        chart = page.canvases["chart-step-throughput-alphabet-state1"]
        assert int(chart["data-points"]) > 0
        assert json.loads(chart["data-last"]) == {
            "worker1": 1000,
            "worker2": 3000,
            "total": 4000,
        }
        workers = page.canvases["chart-workers-ingest"]
        assert json.loads(workers["data-last"]) == {"worker1": 1000, "worker2": 3000}
        lat = page.canvases["chart-pipeline-latency-alphabet-votes"]
        assert json.loads(lat["data-last"]) == {"p50": 0.02048, "p99": 0.02048}
        assert int(page.canvases["chart-pipeline-throughput-alphabet-votes"]["data-points"]) > 0

        shot = tmp_path / "metrics-page.png"
        chromium(
            tmp_path,
            "--virtual-time-budget=5000",
            "--window-size=1400,1800",
            f"--screenshot={shot}",
            url,
        )
        assert shot.exists(), "chromium wrote no screenshot"
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(png) > 40_000, f"the screenshot looks empty ({len(png)} bytes)"
        keep = os.environ.get("ACTORFLOW_KEEP_SCREENSHOT")
        if keep:
            shutil.copy(shot, keep)
    finally:
        feeder.stopped.set()
        feeder.join(10)
    assert feeder.error is None, feeder.error


def test_page_shows_a_real_clusters_figures(tmp_path):
    """A real two-worker cluster reports to a real hub; the page shows its figures."""
    from actorflow.metrics.hub import Hub
    from actorflow.testing import Cluster
    from actorflow.tools.gen import alphabet_frames
    from actorflow.tools.send import send
    from tests.conftest import APPS, Collector

    hub = Hub(("127.0.0.1", 0), ("127.0.0.1", 0))
    hub.start()
    out = Collector()
    out.receiver.start()
    host, port = hub.report_address
    cluster = Cluster(
        str(APPS / "alphabet.py"),
        2,
        [out.port],
        source_name="alphabet",
        log_dir=str(tmp_path / "cluster"),
        extra=["--metrics", f"{host}:{port}"],
    )
    try:
        cluster.start()
        n = 40_000
        send("127.0.0.1", cluster.inputs[0], alphabet_frames(n, seed=2), log=None)
        assert out.wait_for(n, 60)
        deadline = time.monotonic() + 20
        while True:
            steps = {s["id"]: s for s in api(hub.url)["steps"]}
            state = steps.get("state2", {})
            if state.get("records_out") == n and len(state.get("per_worker", [])) == 2:
                break
            assert time.monotonic() < deadline, steps
            time.sleep(0.2)
        html = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", hub.url)
        page = Figures()
        page.feed(html.stdout.decode())
        assert float(page.find(data_metric="records_out", data_step="state2")["data-value"]) == n
        per_worker = [
            float(page.find(data_metric="records_out", data_step=f"state2@{w}")["data-value"])
            for w in cluster.names
        ]
        assert all(v > 0 for v in per_worker) and sum(per_worker) == n
        for w in cluster.names:
            assert page.find(data_metric="status", data_worker=w)["text"] == "up"
    finally:
        cluster.stop()
        out.receiver.stop()
        hub.stop()
