"""Workers report to the metrics hub: real workers, a real hub, real HTTP."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actorflow.control import query_status
from actorflow.metrics.hub import Hub
from actorflow.testing import Cluster, free_port
from actorflow.tools.gen import alphabet_frames, alphabet_totals
from actorflow.tools.send import send
from tests.conftest import APPS

pytestmark = pytest.mark.integration


@pytest.fixture
def hub() -> Iterator[Hub]:
    h = Hub(("127.0.0.1", 0), ("127.0.0.1", 0))
    h.start()
    try:
        yield h
    finally:
        h.stop()


def api(hub: Hub) -> dict:
    with urllib.request.urlopen(hub.url + "api/metrics?series=none", timeout=10) as r:
        return json.loads(r.read())


def wait_api(hub: Hub, check, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = api(hub)
        if check(data) or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


@pytest.mark.parametrize("workers", [1, 2])
def test_workers_report_steps_workers_and_latency(workers, hub, collector, tmp_path):
    host, port = hub.report_address
    cluster = Cluster(
        str(APPS / "alphabet.py"),
        workers,
        [collector.port],
        source_name="alphabet",
        log_dir=str(tmp_path),
        extra=["--metrics", f"{host}:{port}"],
    )
    with cluster:
        cluster.start()
        frames = alphabet_frames(40_000, seed=4)
        send("127.0.0.1", cluster.inputs[0], frames, log=None)
        assert collector.wait_for(len(frames), 30)
        n = len(frames)

        def complete(d: dict) -> bool:
            steps = {s["id"]: s for s in d["steps"]}
            return (
                steps.get("source0", {}).get("records_out") == n
                and steps.get("sink3.0", {}).get("records_out") == n
                and len([w for w in d["workers"] if w["up"]]) == workers
            )

        data = wait_api(hub, complete)
        assert complete(data), data["steps"]
        steps = {s["id"]: s for s in data["steps"]}
        assert {s["kind"] for s in steps.values()} == {"source", "router", "state", "sink"}
        assert steps["state2"]["name"] == "add votes"
        assert steps["state2"]["records_in"] == n and steps["state2"]["errors"] == 0
        assert {w["worker"] for w in data["workers"]} == set(cluster.names)
        if workers == 2:  # keyed state runs on both workers, and both report it
            assert {p["worker"] for p in steps["state2"]["per_worker"]} == set(cluster.names)
        (pipeline,) = data["pipelines"]
        assert pipeline["name"] == "alphabet" and pipeline["latency"]["count"] == n
        assert steps["state2"]["latency"]["count"] > 0
        with urllib.request.urlopen(hub.url + "metrics", timeout=10) as r:
            families = {f.name: f for f in text_string_to_metric_families(r.read().decode())}
        state_in = [
            s.value
            for s in families["actorflow_step_records_in"].samples
            if s.labels.get("step") == "state2" and s.name.endswith("_total")
        ]
        assert sum(state_in) == n


def test_a_worker_with_no_hub_keeps_processing_and_counts_dropped_reports(collector, tmp_path):
    nobody = free_port()  # nothing listens here
    cluster = Cluster(
        str(APPS / "alphabet.py"),
        1,
        [collector.port],
        source_name="alphabet",
        log_dir=str(tmp_path),
        extra=["--metrics", f"127.0.0.1:{nobody}"],
    )
    with cluster:
        cluster.start()
        frames = alphabet_frames(100_000, seed=6)
        send("127.0.0.1", cluster.inputs[0], frames, log=None)
        assert collector.wait_for(len(frames), 60)
        last: dict[str, int] = {}
        for line in collector.lines():
            k, _, v = line.rstrip("\n").partition(" => ")
            last[k] = int(v)
        assert last == alphabet_totals(frames)
        deadline = time.monotonic() + 10
        while True:
            status = query_status(("127.0.0.1", cluster.control))
            reporter = status["actors"]["reporter@worker1"]
            if reporter["reports_dropped"] >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert reporter["reports_sent"] == 0 and reporter["reports_dropped"] >= 2
        log = cluster.workers[0].log()
        assert log.count(f"hub at 127.0.0.1:{nobody} unreachable") == 1
