"""Windows on real clusters: the windowed example apps on 1 and 2 workers (real worker
processes, real TCP senders and receivers), outputs checked against values computed
here; late-data policies with their counts in status; a worker killed and restarted
while windows fill, every window's output as it would have been."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actorflow.control import query_status
from actorflow.examples import alerts_windowed, sequence_detector, window_detector
from actorflow.testing import Cluster
from actorflow.tools.send import send, send_acked
from tests.conftest import APPS, Collector, group_alive
from tests.test_testing_run import alerts_args, alerts_expected, detector_expected

pytestmark = pytest.mark.integration

IDLE_MS = 1500  # a quiet event-time source's watermark follows the clock after this


class Run:
    """A cluster of one app, a receiver, and the helpers to feed and read them."""

    def __init__(
        self, tmp_path: Path, app: str, workers: int, extra: list[str], inputs: Any = None
    ) -> None:
        self.out = Collector()
        self.out.receiver.start()
        self.cluster = Cluster(
            str(APPS / app),
            workers,
            [self.out.port],
            source_name="Detector",
            inputs=inputs,
            log_dir=str(tmp_path),
            extra=extra,
        )
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def control(self) -> tuple[str, int]:
        return ("127.0.0.1", self.cluster.control)

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.lines()]

    def wait(self, done: Callable[[], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return True
            time.sleep(0.1)
        return done()

    def send_async(self, worker: int, frames: list[bytes], stream: str | None = None) -> None:
        port = self.cluster.inputs[worker]

        def run() -> None:
            try:
                if stream is None:
                    send("127.0.0.1", port, frames, log=None)
                else:
                    send_acked(
                        "127.0.0.1", port, frames, stream=stream, batch_size=50,
                        interval_ms=40, patience=90, log=None,
                    )  # fmt: skip
            except BaseException as exc:  # reported by join()
                self.errors.append(exc)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def join(self, timeout: float = 120) -> None:
        for t in self.threads:
            t.join(timeout)
            assert not t.is_alive(), "a sender did not finish"
        if self.errors:
            raise self.errors[0]

    def actors(self, prefix: str) -> list[dict]:
        status = query_status(self.control())
        return [a for k, a in status["actors"].items() if k.startswith(prefix)]

    def close(self) -> None:
        self.cluster.stop()
        self.out.receiver.stop()
        for w in self.cluster.workers:
            if w.pgid is not None:
                assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    made: list[Run] = []

    def make(app: str, workers: int, *extra: str, inputs: Any = None) -> Run:
        run = Run(tmp_path / f"run{len(made)}", app, workers, list(extra), inputs)
        made.append(run)
        return run

    yield make
    for run in made:
        run.close()


def detector_inputs(keys: list[str], count: int, seed: int) -> dict[str, list[int]]:
    """Per key, increasing values (event times in ms) with random gaps."""
    rng = random.Random(seed)
    out = {}
    for key in keys:
        v, vals = 0, []
        for _ in range(count):
            v += rng.randrange(1, 12)
            vals.append(v)
        out[key] = vals
    return out


def frames_in_time_order(values: dict[str, list[int]]) -> list[bytes]:
    pairs = sorted((v, k) for k, vals in values.items() for v in vals)
    return [window_detector.frame(k, v) for v, k in pairs]


def as_tuples(lines: list[dict]) -> list[tuple]:
    return sorted((d["key"], d["value"], tuple(d["window"])) for d in lines)


@pytest.mark.parametrize(
    ("workers", "state_actors"), [(1, 1), (2, 1), (2, 2)], ids=["1w", "2w", "2w-2lanes"]
)
@pytest.mark.parametrize("kind", ["tumbling", "sliding"])
def test_window_detector_range_windows_across_workers(runs, workers, state_actors, kind):
    """Event time from the data; on 2 workers each sends its own keys and every window
    step's watermark is the minimum over both workers' routers. With two state actors
    per worker, each holds a share of the keys and takes every router's watermark."""
    run = runs("window_detector.py", workers, "--event-time", "--idle-ms", str(IDLE_MS),
               "--window-type", kind, "--window-size", "50", "--window-slide", "25",
               "--state-actors", str(state_actors))  # fmt: skip
    run.cluster.start()
    keys = [f"k{i}" for i in range(8)]
    values = detector_inputs(keys, 150, seed=workers)
    for w in range(workers):
        mine = {k: v for i, (k, v) in enumerate(values.items()) if i % workers == w}
        run.send_async(w, frames_in_time_order(mine))
    run.join()
    want = detector_expected(values, 50, 25 if kind == "sliding" else 50)
    assert run.out.wait_for(len(want), 60), f"{len(run.out.lines())} of {len(want)}"
    assert as_tuples(run.json_lines()) == want
    states = run.actors("state")
    assert len(states) == workers * state_actors
    assert sum(s["late_dropped"] for s in states) == 0
    assert all(s["open_keys"] == 0 for s in states)  # every window has fired
    if state_actors > 1:  # the keys are spread: every state actor had windows to fire
        assert all(s["records_in"] > 0 for s in states), states


@pytest.mark.parametrize("workers", [1, 2])
def test_window_detector_count_windows(runs, workers):
    run = runs("window_detector.py", workers, "--window-type", "counting", "--window-size", "5")
    run.cluster.start()
    values = {f"k{i}": list(range(1, 104)) for i in range(6)}
    frames = [window_detector.frame(k, v) for v in range(1, 104) for k in values]
    run.send_async(0, frames)
    run.join()
    first = {v: v - (v - 1) % 5 for v in range(1, 104)}  # windows of 1-5, 6-10, ...
    window = {v: tuple(range(first[v], min(first[v] + 5, 104))) for v in range(1, 104)}
    want = sorted((k, v, window[v]) for k in values for v in values[k])
    # ... and the partial windows 101-103 too, 5 s after their first record (Wallaroo's
    # count windows flush on a 5-s timer)
    assert run.out.wait_for(len(want), 60)
    assert as_tuples(run.json_lines()) == want


def test_window_detector_ingest_time_quiet_keys_still_fire(runs):
    """Ingest time: with no more data, the sources' timers move the watermark, so every
    window fires; each value lands in exactly one tumbling window, in order per key."""
    run = runs("window_detector.py", 2, "--window-size", "200")
    run.cluster.start()
    values = {f"k{i}": list(range(1, 301)) for i in range(4)}
    frames = [window_detector.frame(k, v) for v in range(1, 301) for k in values]
    run.send_async(0, frames[: len(frames) // 2])
    run.send_async(1, frames[len(frames) // 2 :])
    run.join()
    total = sum(len(v) for v in values.values())
    assert run.out.wait_for(total, 60)
    by_key: dict[str, list[int]] = defaultdict(list)
    windows: dict[str, list[tuple]] = defaultdict(list)
    for d in run.json_lines():
        by_key[d["key"]].append(d["value"])
        if not windows[d["key"]] or windows[d["key"]][-1] != tuple(d["window"]):
            windows[d["key"]].append(tuple(d["window"]))
    assert {k: sorted(v) for k, v in by_key.items()} == values  # each value once
    for key, ws in windows.items():
        flat = [v for w in ws for v in w]
        assert sorted(flat) == values[key] and len(set(flat)) == len(flat), key


@pytest.mark.parametrize(
    ("policy", "late_field"),
    [("drop", "late_dropped"), ("fire-per-message", "late_fired"),
     ("place-in-oldest-window", "late_placed")],
)  # fmt: skip
def test_late_data_policies_on_a_worker(runs, policy, late_field):
    run = runs("window_detector.py", 1, "--event-time", "--idle-ms", "4000",
               "--window-late-policy", policy)  # fmt: skip
    run.cluster.start()
    run.send_async(0, [window_detector.frame("k", v) for v in range(1, 121)])
    run.join()
    # [0,50) and [50,100) fire as the data passes them; [100,150) stays open
    assert run.wait(lambda: len(run.out.lines()) >= 99), run.out.lines()
    run.send_async(0, [window_detector.frame("k", 7)])  # [0, 50) fired long ago
    run.join()
    assert run.wait(lambda: run.actors("state")[0][late_field] == 1, 30)
    tail = list(range(100, 121))
    want = {
        "drop": [tuple(tail)],
        "fire-per-message": [(7,), tuple(tail)],
        "place-in-oldest-window": [(*tail, 7)],
    }[policy]
    assert run.out.wait_for(99 + sum(len(w) for w in want), 30)
    got = {tuple(d["window"]) for d in run.json_lines()[99:]}
    assert got == set(want)
    assert all(s["late_dropped"] == (policy == "drop") for s in run.actors("state"))


@pytest.mark.parametrize("workers", [1, 2])
def test_alerts_over_sliding_windows_from_a_generator(runs, workers):
    run = runs("alerts_windowed.py", workers, *alerts_args(4000)[2:])  # the cluster's --out
    run.cluster.start()
    want = alerts_expected(4000, 10, 900, 300, 2000)
    n = sum(len(v) for v in want.values())
    assert run.out.wait_for(n, 60), f"{len(run.out.lines())} of {n}"
    got: dict[str, list[str]] = defaultdict(list)
    for line in run.out.lines():
        user = line.split(" for ", 1)[1].split(":")[0]
        got[user].append(line.rstrip("\n"))
    assert got == want  # per user, in window order
    assert alerts_windowed.USERS  # the shape of Wallaroo's alerts_windowed


@pytest.mark.parametrize("workers", [1, 2])
def test_sequence_detector_windows_stay_contiguous(runs, workers):
    run = runs("sequence_detector.py", workers)
    run.cluster.start()
    keys, n = [str(k) for k in range(12)], 200
    frames = [sequence_detector.frame(k, v) for v in range(1, n + 1) for k in keys]
    run.send_async(0, frames)
    run.join()
    assert run.out.wait_for(len(frames), 60)
    last: dict[str, list[int]] = {}
    for d in run.json_lines():
        w = d["window"]
        assert w[-1] > 0 and all(b == a + 1 for a, b in zip(w, w[1:], strict=False) if a), d
        assert last.get(d["key"], [0])[-1] == w[-1] - 1, d  # per-key order, no gap
        assert d["hops"] == 2, d  # through the app's own serialize/deserialize twice
        last[d["key"]] = w
    assert last == {k: [n - 3, n - 2, n - 1, n] for k in keys}


def test_kill_a_worker_and_restart_it_windows_are_exact(runs):
    """A worker dies while windows fill; after its restart and the rollback every
    window's output is what it would have been (at-least-once: repeats are identical).
    One replaying sender, on worker1; worker2's source has none, so it holds the
    watermarks back for the idle time only (after the start and after the rollback)."""
    run = runs("window_detector.py", 2, "--event-time", "--idle-ms", "1000",
               "--time-between-checkpoints", "0.3")  # fmt: skip
    run.cluster.start()
    values = detector_inputs([f"k{i}" for i in range(10)], 300, seed=11)
    run.send_async(0, frames_in_time_order(values), stream="detector")
    assert run.wait(lambda: len(run.out.lines()) > 200, 60)
    victim = run.cluster.workers[1]
    victim.proc.kill()
    victim.proc.wait(10)
    run.wait(lambda: not (victim.pgid and group_alive(victim.pgid)), 10)
    run.cluster.start_worker(1).wait_ready(60)
    run.join()
    want = detector_expected(values, 50, 50)
    assert run.wait(lambda: set(as_tuples(run.json_lines())) >= set(want), 60)
    lines = run.json_lines()
    assert sorted(set(as_tuples(lines))) == want  # nothing lost, nothing made up
    windows: dict[tuple, set] = defaultdict(set)
    for d in lines:  # a replayed window repeats the very same contents
        windows[(d["key"], d["value"])].add(tuple(d["window"]))
    assert all(len(w) == 1 for w in windows.values())
    assert query_status(run.control())["epoch"] >= 2
