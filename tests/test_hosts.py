"""A cluster across two hosts (network namespaces): it forms with the design document's
command lines given the hosts' own addresses, listens only there, answers status from
the other host, and survives a 10 s partition and a 20 s SIGSTOP with exact totals and
no manual restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorflow.processes import group_alive
from actorflow.testing import WorkerProcess
from tests.conftest import APPS, alphabet_file_totals
from tests.hosts import Hosts

pytestmark = pytest.mark.integration

ALPHABET = str(APPS / "alphabet.py")
CONTROL = 12500  # as in the design document: each host has its own port space
OUT = 7002


def votes_file(path: Path, seed: int, messages: int) -> dict[str, int]:
    """Generate an alphabet file with the tool; the totals it should give, computed here."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "actorflow",
            "gen",
            "alphabet",
            "--messages",
            str(messages),
            "--output",
            str(path),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
    )
    return alphabet_file_totals(path)


class TwoHostCluster:
    """alphabet on host a (initializer, worker1) and host b (worker2); the receiver on a."""

    def __init__(self, hosts: Hosts, tmp: Path) -> None:
        self.hosts, self.tmp = hosts, tmp
        self.output = tmp / "out.txt"
        self.receiver = hosts.popen(
            0,
            ["receive", "--listen", f"{hosts.addresses[0]}:{OUT}", "--framed", "--output",
             str(self.output)],
            stderr=subprocess.DEVNULL,
        )
        a, b = hosts.addresses
        common = ["--out", f"{a}:{OUT}", "--control", f"{a}:{CONTROL}", "--worker-count", "2",
                  "--time-between-checkpoints", "0.5"]
        self.commands = [
            ["--in", f"alphabet@{a}:7010", *common, "--data", f"{a}:12501",
             "--topology-initializer", "--worker-name", "worker1",
             "--resilience-dir", str(tmp / "r1")],
            ["--in", f"alphabet@{b}:7011", *common, "--data", f"{a}:12501",
             "--worker-name", "worker2", "--resilience-dir", str(tmp / "r2")],
        ]
        self.workers: list[WorkerProcess] = []
        self.senders: list[subprocess.Popen] = []

    def start(self) -> TwoHostCluster:
        for i, args in enumerate(self.commands):
            log = str(self.tmp / f"worker{i + 1}.log")
            w = WorkerProcess(ALPHABET, args, log_path=log, prefix=self.hosts.exec(i))
            self.workers.append(w.start())
        for w in self.workers:
            w.wait_ready(60)
        return self

    def send(self, i: int, path: Path, stream: str) -> None:
        port = 7010 + i
        self.senders.append(
            self.hosts.popen(
                i,
                ["send", "--host", f"{self.hosts.addresses[i]}:{port}", "--file", str(path),
                 "--framed", "--acked", "--stream", stream, "--batch-size", "40",
                 "--interval", "10", "--patience", "150"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )

    def wait_senders(self, timeout: float = 180) -> None:
        for s in self.senders:
            out, err = s.communicate(timeout=timeout)
            assert s.returncode == 0, f"sender failed: {out} {err}\n{self.logs()}"

    def totals(self) -> dict[str, int]:
        last: dict[str, int] = {}
        if self.output.exists():
            for line in self.output.read_text().splitlines():
                key, _, value = line.partition(" => ")
                if value:
                    last[key] = int(value)
        return last

    def wait_totals(self, want: dict[str, int], timeout: float = 30) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.totals() != want:
            time.sleep(0.2)
        return self.totals()

    def status(self, i: int) -> dict:
        """``actorflow status --json`` run on host i."""
        r = subprocess.run(
            [*self.hosts.exec(i), sys.executable, "-m", "actorflow", "status", "--control",
             f"{self.hosts.addresses[0]}:{CONTROL}", "--json", "--timeout", "10"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def wait_state(self, pred, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.status(0)
            if pred(status):
                return status
            time.sleep(0.3)
        raise AssertionError(f"status never matched: {status}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(w.log()[-3000:] for w in self.workers)

    def stop(self) -> None:
        for s in self.senders:
            if s.poll() is None:
                s.kill()
                s.wait(5)
        for w in reversed(self.workers):
            if w.pgid and group_alive(w.pgid):
                os.killpg(w.pgid, signal.SIGCONT)  # a test that stopped it may have failed
            if w.proc and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
            w.stop()
        self.receiver.terminate()
        self.receiver.wait(10)
        for w in self.workers:
            if w.pgid:
                assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"


@pytest.fixture
def cluster(tmp_path) -> Iterator[TwoHostCluster]:
    hosts = Hosts().create()
    c = None
    try:
        c = TwoHostCluster(hosts, tmp_path)
        yield c
    finally:
        try:
            if c is not None:
                c.stop()
        finally:
            hosts.remove()  # even if stopping failed: no namespace outlives the test


def test_two_hosts_form_a_cluster_that_listens_only_on_their_addresses(cluster):
    cluster.start()
    for i, addr in enumerate(cluster.hosts.addresses):
        listening = cluster.hosts.listening(i)
        assert listening, "nothing listens"
        assert {host for host, _ in listening} == {addr}, listening
    want = votes_file(cluster.tmp / "v1.bin", 1, 4000)
    cluster.send(0, cluster.tmp / "v1.bin", "s1")
    cluster.wait_senders()
    assert cluster.wait_totals(want) == want
    status = cluster.status(1)  # from the other host
    assert status["worker_names"] == ["worker1", "worker2"]
    assert status["processing_messages"] is True
    # Keys are owned by both workers: records from host a's source reached host b's state.
    keys = {w: sum(a.get("keys", 0) for k, a in status["actors"].items() if k.endswith(w))
            for w in ("@worker1", "@worker2")}
    assert keys["@worker1"] > 0 and keys["@worker2"] > 0, keys


def _both_streams(cluster) -> dict[str, int]:
    want1 = votes_file(cluster.tmp / "v1.bin", 11, 3000)
    want2 = votes_file(cluster.tmp / "v2.bin", 12, 3000)
    cluster.send(0, cluster.tmp / "v1.bin", "s1")
    cluster.send(1, cluster.tmp / "v2.bin", "s2")
    return {k: want1.get(k, 0) + want2.get(k, 0) for k in set(want1) | set(want2)}


def test_a_partition_heals_without_a_restart_and_totals_are_exact(cluster):
    cluster.start()
    want = _both_streams(cluster)
    cluster.wait_state(lambda s: s["last_checkpoint"] >= 2)
    first = cluster.workers[1]
    epoch = cluster.status(0)["epoch"]
    cluster.hosts.cut()
    time.sleep(10)  # the partition itself: what is tested is the 10 s without the link
    during = cluster.status(0)
    cluster.hosts.heal()
    assert during["lost_workers"] == ["worker2"], during
    healed = cluster.wait_state(lambda s: s["state"] == "running" and not s["lost_workers"])
    assert healed["epoch"] > epoch
    cluster.wait_senders()
    assert cluster.wait_totals(want) == want
    assert first.proc.poll() is None, "worker2 was restarted or died"
    assert len(cluster.workers) == 2


def test_a_stopped_worker_is_fenced_and_rejoins_after_sigcont(cluster):
    cluster.start()
    want = _both_streams(cluster)
    cluster.wait_state(lambda s: s["last_checkpoint"] >= 2)
    victim = cluster.workers[1]
    epoch = cluster.status(0)["epoch"]
    os.killpg(victim.pgid, signal.SIGSTOP)
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        lost = cluster.wait_state(lambda s: s["lost_workers"] == ["worker2"], timeout=8)
        assert lost["state"] == "recovering"
        time.sleep(20 - 8)  # stopped for 20 s in all
    finally:
        os.killpg(victim.pgid, signal.SIGCONT)
        victim.proc.send_signal(signal.SIGCONT)
    back = cluster.wait_state(lambda s: s["state"] == "running" and not s["lost_workers"])
    assert back["epoch"] > epoch
    assert victim.wait_log(r"was fenced", timeout=10), victim.log()[-2000:]
    cluster.wait_senders()
    assert cluster.wait_totals(want) == want
    assert victim.proc.poll() is None


def test_a_cluster_grows_onto_another_host_and_shrinks_back(cluster):
    """worker2 on host b joins a running one-worker cluster on host a with --join: its
    60 partitions' state comes across the link from worker1's guard; then ``actorflow
    shrink``, run on host b, hands them back. Totals exact through both."""
    a, b = cluster.hosts.addresses
    common = ["--out", f"{a}:{OUT}", "--time-between-checkpoints", "0.5"]
    cluster.commands = [
        ["--in", f"alphabet@{a}:7010", *common, "--control", f"{a}:{CONTROL}",
         "--worker-count", "1", "--worker-name", "worker1",
         "--resilience-dir", str(cluster.tmp / "r1")],
    ]
    cluster.start()
    want = votes_file(cluster.tmp / "v1.bin", 21, 60_000)
    cluster.send(0, cluster.tmp / "v1.bin", "s1")
    joiner = WorkerProcess(
        ALPHABET,
        ["--in", f"alphabet@{b}:7011", *common, "--join", f"{a}:{CONTROL}",
         "--worker-count", "2", "--worker-name", "worker2",
         "--resilience-dir", str(cluster.tmp / "r2")],
        log_path=str(cluster.tmp / "worker2.log"),
        prefix=cluster.hosts.exec(1),
    )
    cluster.workers.append(joiner.start())
    joiner.wait_ready(60)
    status = cluster.wait_state(lambda s: s["worker_count"] == 2 and s["rescale"] is None)
    assert status["last_rescale"]["moves"] == {"worker1->worker2": 60}, status["last_rescale"]
    assert cluster.senders[0].poll() is None, "the sender finished before the grow was done"
    shrink = subprocess.run(
        [*cluster.hosts.exec(1), sys.executable, "-m", "actorflow", "shrink", "--control",
         f"{a}:{CONTROL}", "--workers", "worker2", "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert shrink.returncode == 0, shrink.stderr + cluster.logs()
    assert joiner.proc.wait(30) == 0, joiner.log()
    cluster.wait_senders()
    assert cluster.wait_totals(want) == want
    status = cluster.status(0)
    assert status["worker_names"] == ["worker1"] and status["table_version"] == 2
