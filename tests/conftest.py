"""Shared fixtures: real workers, a real receiver, and a check that nothing is left behind."""

from __future__ import annotations

import os
import secrets
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actorflow.processes import group_alive
from actorflow.testing import WorkerProcess, free_port
from actorflow.tools.receive import Receiver

ROOT = Path(__file__).resolve().parent.parent
RESILIENCE_ROOT = tempfile.mkdtemp(prefix="actorflow-tests-")  # removed when the session ends
# One cluster secret for every worker the tests start (they inherit the environment),
# the way several machines share one; tests of the other ways to find it unset it.
os.environ["ACTORFLOW_CLUSTER_SECRET"] = secrets.token_hex(32)


def pytest_sessionfinish(session, exitstatus):  # noqa: ARG001
    shutil.rmtree(RESILIENCE_ROOT, ignore_errors=True)


APPS = ROOT / "apps"


def alphabet_file_totals(path: Path) -> dict[str, int]:
    """Votes per letter in an alphabet file of frames, summed here (not by the tools)."""
    data, totals, pos = path.read_bytes(), {}, 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        letter, votes = struct.unpack_from(">sI", data, pos + 4)
        totals[letter.decode()] = totals.get(letter.decode(), 0) + votes
        pos += 4 + size
    return totals


class Collector:
    """A real TCP receiver (framed) that keeps every payload in arrival order."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()
        self.port = free_port()
        self.receiver = Receiver("127.0.0.1", self.port, framed=True, sink=self._add, log=None)

    def _add(self, payloads: list[bytes]) -> None:
        with self._lock:
            self.payloads.extend(payloads)

    def lines(self) -> list[str]:
        with self._lock:
            return [p.decode() for p in self.payloads]

    def wait_for(self, n: int, timeout: float = 60.0) -> bool:
        return self.receiver.wait_for(n, timeout)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.receiver.start()
    try:
        yield c
    finally:
        c.receiver.stop()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers; on teardown stop them and assert no process of theirs is left."""
    started: list[WorkerProcess] = []

    def start(app: str, *args: str, wait: bool = True, timeout: float = 60.0) -> WorkerProcess:
        log = tmp_path / f"worker{len(started)}.log"
        w = WorkerProcess(str(APPS / app) if "/" not in app else app, list(args), log_path=str(log))
        started.append(w)
        w.start()
        if wait:
            w.wait_ready(timeout)
        return w

    yield start
    for w in started:
        w.stop()
    for w in started:
        if w.pgid is not None:
            assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"


def worker_args(in_port: int, out_port: int, *extra: str, name: str = "in") -> list[str]:
    """The flags of a one-worker cluster on free loopback ports."""
    return [
        "--in",
        f"{name}@127.0.0.1:{in_port}",
        "--out",
        f"127.0.0.1:{out_port}",
        "--control",
        f"127.0.0.1:{free_port()}",
        "--topology-initializer",
        "--worker-count",
        "1",
        "--worker-name",
        "w1",
        "--log-level",
        "INFO",
        "--resilience-dir",
        tempfile.mkdtemp(dir=RESILIENCE_ROOT),
        *extra,
    ]
