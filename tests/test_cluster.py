"""Multi-worker clusters: real worker processes, each with its own Thespian admin, joined
through the initializer's control channel; results checked per key."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator

import pytest

from actorflow.control import query_status
from actorflow.testing import Cluster, WorkerProcess, free_port
from actorflow.tools.gen import alphabet_frames, word_counts, word_lines
from actorflow.tools.send import send
from tests.conftest import APPS, ROOT, Collector, group_alive
from tests.test_integration import expected_alphabet, framed, per_key

pytestmark = pytest.mark.integration

TESTER = str(ROOT / "tests" / "apps" / "topology_tester.py")


@pytest.fixture
def receivers() -> Iterator:
    made: list[Collector] = []

    def make(n: int) -> list[Collector]:
        cs = [Collector() for _ in range(n)]
        for c in cs:
            c.receiver.start()
        made.extend(cs)
        return cs

    yield make
    for c in made:
        c.receiver.stop()


@pytest.fixture
def clusters(tmp_path) -> Iterator:
    made: list[Cluster] = []

    def make(app: str, n: int, outs: list[int], **kw) -> Cluster:
        c = Cluster(app, n, outs, log_dir=str(tmp_path), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
    for c in made:
        for w in c.workers:
            if w.pgid is not None:
                assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"


def send_split(ports: list[int], frames: list[bytes]) -> None:
    """Send frames[i::n] to the i-th port, all at once."""
    n = len(ports)
    threads = [
        threading.Thread(target=send, args=("127.0.0.1", p, frames[i::n]), kwargs={"log": None})
        for i, p in enumerate(ports)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def wait_total(collectors: list[Collector], n: int, timeout: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(c.receiver.messages for c in collectors) >= n:
            return
        time.sleep(0.05)
    got = [c.receiver.messages for c in collectors]
    raise AssertionError(f"outputs per worker {got}, expected {n} in all")


@pytest.mark.parametrize("workers", [2, 3])
def test_alphabet_spreads_keys_and_keeps_per_key_order(workers, receivers, clusters):
    outs = receivers(workers)
    cluster = clusters(str(APPS / "alphabet.py"), workers, [c.port for c in outs]).start()
    frames = alphabet_frames(20_000, seed=workers)
    send("127.0.0.1", cluster.inputs[0], frames, log=None)  # one source: exact per-key order
    wait_total(outs, len(frames))
    merged = [line for c in outs for line in c.lines()]
    assert per_key(merged) == expected_alphabet(frames)
    keys = [set(per_key(c.lines())) for c in outs]
    assert all(keys), f"a worker processed no key: {keys}"
    for a, b in itertools.combinations(keys, 2):
        assert not a & b, "a key's outputs came from two workers"
    status = query_status(("127.0.0.1", cluster.control))
    assert status["processing_messages"] and status["worker_count"] == workers
    assert status["worker_names"] == cluster.names
    owned = {
        k.split("@")[1]: v["partitions"]
        for k, v in status["actors"].items()
        if k.startswith("state")
    }
    assert set(owned) == set(cluster.names) and sum(owned.values()) == 120
    assert max(owned.values()) - min(owned.values()) <= 1
    # status names the keys each worker owns: the ones whose outputs came from it
    for name, got in zip(cluster.names, keys, strict=True):
        assert set(status["actors"][f"state2@{name}"]["key_sample"]) == got


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_alphabet_with_data_split_over_all_sources(workers, receivers, clusters):
    outs = receivers(1)
    cluster = clusters(str(APPS / "alphabet.py"), workers, [outs[0].port]).start()
    frames = alphabet_frames(30_000, seed=10 + workers)
    send_split(cluster.inputs, frames)
    wait_total(outs, len(frames))
    got = per_key(outs[0].lines())
    want = expected_alphabet(frames)
    assert {k: v[-1] for k, v in got.items()} == {k: v[-1] for k, v in want.items()}
    for k, totals in got.items():
        assert len(totals) == len(want[k]) and totals == sorted(totals), k


@pytest.mark.parametrize("workers", [2, 3])
def test_word_count_over_workers(workers, receivers, clusters):
    outs = receivers(workers)
    cluster = clusters(str(APPS / "word_count.py"), workers, [c.port for c in outs]).start()
    lines = word_lines(2_000, seed=workers)
    send_split(cluster.inputs, [framed(x.encode()) for x in lines])
    expected = word_counts(lines)
    wait_total(outs, sum(expected.values()))
    per_worker = [per_key(c.lines()) for c in outs]
    merged = {w: c for pw in per_worker for w, c in pw.items()}
    assert {w: c[-1] for w, c in merged.items()} == expected
    assert all(c == list(range(1, len(c) + 1)) for c in merged.values())
    assert all(per_worker), "a worker counted no word"
    assert sum(len(pw) for pw in per_worker) == len(expected)  # each word on one worker only


def test_design_document_command_lines_in_any_order(receivers, tmp_path):
    """The example's two command lines, second worker first; ``python app.py`` and
    ``actorflow worker --app`` forms; ``actorflow status`` shows keys on both."""
    (out,) = receivers(1)
    control, data, metrics = free_port(), free_port(), free_port()
    in1, in2 = free_port(), free_port()
    common = [
        "--out",
        f"127.0.0.1:{out.port}",
        "--metrics",
        f"127.0.0.1:{metrics}",
        "--control",
        f"127.0.0.1:{control}",
        "--data",
        f"127.0.0.1:{data}",
    ]
    second = WorkerProcess(
        str(APPS / "alphabet.py"),
        [
            "--in",
            f"127.0.0.1:{in2}",
            *common,
            "--worker-count",
            "2",
            "--worker-name",
            "worker2",
            "--resilience-dir",
            str(tmp_path),
        ],
        log_path=str(tmp_path / "w2.log"),
    ).start()
    first = WorkerProcess("", [], log_path=str(tmp_path / "w1.log"))
    first.proc = subprocess.Popen(
        [
            sys.executable,
            str(APPS / "alphabet.py"),
            "--in",
            f"127.0.0.1:{in1}",
            *common,
            "--topology-initializer",
            "--worker-count",
            "2",
            "--worker-name",
            "worker1",
            "--resilience-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "w1.log", "wb"),
        text=True,  # noqa: SIM115
    )
    threading.Thread(target=first._read_stdout, daemon=True).start()
    try:
        assert second.wait_log("waiting for the initializer's control channel", 30)
        first.wait_ready(60)
        second.wait_ready(60)
        frames = alphabet_frames(10_000, seed=4)
        send_split([in1, in2], frames)
        wait_total([out], len(frames))
        got = per_key(out.lines())
        assert {k: v[-1] for k, v in got.items()} == {
            k: v[-1] for k, v in expected_alphabet(frames).items()
        }
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "actorflow",
                "status",
                "--control",
                f"127.0.0.1:{control}",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        status = json.loads(cli.stdout)
        assert status["processing_messages"] is True
        assert status["worker_names"] == ["worker1", "worker2"] and status["worker_count"] == 2
        keys = {
            k.split("@")[1]: v["keys"] for k, v in status["actors"].items() if k.startswith("state")
        }
        assert keys["worker1"] > 0 and keys["worker2"] > 0 and sum(keys.values()) == 26
        text = subprocess.run(
            [sys.executable, "-m", "actorflow", "status", "--control", f"127.0.0.1:{control}"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert "worker worker1:" in text and "worker worker2:" in text and "keys" in text
    finally:
        second.stop()
        first.stop()


def stranger(cluster: Cluster, out_port: int, name: str, worker_count: int) -> WorkerProcess:
    """A worker of our own making that asks to join ``cluster`` (stopped with it)."""
    w = WorkerProcess(
        str(APPS / "alphabet.py"),
        [
            "--in",
            f"x@127.0.0.1:{free_port()}",
            "--out",
            f"127.0.0.1:{out_port}",
            "--control",
            f"127.0.0.1:{cluster.control}",
            "--worker-count",
            str(worker_count),
            "--worker-name",
            name,
            "--resilience-dir",
            cluster.resilience_dir(0) + f"-{name}",
        ],
        log_path=os.path.join(cluster.log_dir, f"{name}.log"),
    ).start()
    cluster.workers.append(w)
    return w


def test_refused_workers_leave_the_cluster_unharmed(receivers, clusters):
    (out,) = receivers(1)
    cluster = clusters(str(APPS / "alphabet.py"), 3, [out.port])
    first = cluster.start_worker(0)
    cluster.start_worker(1)
    assert first.wait_log("worker 'worker2' joined", 30)
    # A second "worker2" while the cluster gathers: refused, exits non-zero.
    dup = cluster.start_worker(1)
    assert dup.proc.wait(60) != 0
    assert "worker name 'worker2' is already taken" in dup.log()
    # A worker that disagrees on the worker count: refused.
    odd = stranger(cluster, out.port, "odd", worker_count=2)
    assert odd.proc.wait(60) != 0
    assert "worker-count mismatch" in odd.log()
    # The rightful third worker completes the cluster, which works.
    cluster.start_worker(2)
    for w in (cluster.workers[0], cluster.workers[1], cluster.workers[-1]):
        w.wait_ready(60)
    # One worker too many once running: refused.
    extra = stranger(cluster, out.port, "worker4", worker_count=3)
    assert extra.proc.wait(60) != 0
    assert "already running with its 3 workers" in extra.log()
    frames = alphabet_frames(5_000, seed=9)
    send("127.0.0.1", cluster.inputs[0], frames, log=None)
    wait_total([out], len(frames))
    assert per_key(out.lines()) == expected_alphabet(frames)
    assert query_status(("127.0.0.1", cluster.control))["worker_count"] == 3


def test_start_up_failures_are_clear(receivers, tmp_path):
    (out,) = receivers(1)
    # A joiner with no initializer gives up after --join-timeout.
    lonely = subprocess.run(
        [
            sys.executable,
            "-m",
            "actorflow",
            "worker",
            "--app",
            str(APPS / "alphabet.py"),
            "--in",
            f"127.0.0.1:{free_port()}",
            "--out",
            f"127.0.0.1:{out.port}",
            "--control",
            f"127.0.0.1:{free_port()}",
            "--worker-count",
            "2",
            "--worker-name",
            "w2",
            "--join-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lonely.returncode == 1
    assert "no initializer answers on --control" in lonely.stderr
    # An app that fails to import on one worker: that worker says why and exits;
    # the initializer keeps waiting for a good one.
    app = tmp_path / "fragile.py"
    app.write_text(
        (APPS / "alphabet.py")
        .read_text()
        .replace(
            "def application_setup(args):",
            "def application_setup(args):\n"
            "    if 'worker2' in args:\n"
            "        raise ImportError('no module named numpy on this machine')",
        )
    )
    cluster = Cluster(str(app), 2, [out.port], log_dir=str(tmp_path))
    try:
        first = cluster.start_worker(0)
        assert first.wait_log("waiting for worker", 30)
        bad = cluster.start_worker(1)
        assert bad.proc.wait(60) != 0
        assert "no module named numpy on this machine" in bad.log()
        status = query_status(("127.0.0.1", cluster.control))
        assert status["state"] == "gathering" and status["expected_workers"] == 2
    finally:
        cluster.stop()


# --------------------------------------------------------------------------
# Topology tester: chains of stateless (s) / state (S) steps, each with or without a
# key_by (k) before it, on 1, 2 and 3 workers.

STEP_KINDS = ["s", "S", "ks", "kS"]
CHAINS = [",".join(c) for depth in (1, 2, 3) for c in itertools.product(STEP_KINDS, repeat=depth)]


def topology_cases() -> list[tuple[str, int]]:
    """Every chain on 1, 2 and 3 workers (252 clusters, about half a second each)."""
    return [(chain, w) for chain in CHAINS for w in (1, 2, 3)]


def expected_paths(chain: str, workers: int, keys: list[str]) -> dict:
    """Per key, the step paths the outputs must carry, in order; None where a count
    depends on how records from several workers interleave."""
    steps = chain.split(",")
    keyed_so_far = False
    spread = False  # records have passed a keyed state step on more than one worker
    plan = []
    for i, step in enumerate(steps, 1):
        keyed_so_far |= step.startswith("k")
        kind = step[-1]
        plan.append((i, kind, keyed_so_far, spread))
        if kind == "S" and keyed_so_far and workers > 1:
            spread = True
    seen_key: dict = defaultdict(int)
    seen_all: dict = defaultdict(int)
    out: dict = defaultdict(list)
    for key in keys:
        path = []
        for i, kind, keyed, was_spread in plan:
            if kind == "s":
                path.append(f"s{i}")
            elif keyed:
                seen_key[(i, key)] += 1
                path.append(f"S{i}#{seen_key[(i, key)]}")
            else:
                seen_all[i] += 1
                path.append(None if was_spread else f"S{i}#{seen_all[i]}")
        out[key].append(path)
    return out


@pytest.mark.parametrize(("chain", "workers"), topology_cases())
def test_topology(chain, workers, receivers, clusters):
    (out,) = receivers(1)
    cluster = clusters(TESTER, workers, [out.port], extra=["--steps", chain]).start()
    keys = [f"k{(i * 7) % 11}" for i in range(66)]
    send("127.0.0.1", cluster.inputs[0], [framed(k.encode()) for k in keys], log=None)
    wait_total([out], len(keys), 30)
    got: dict = defaultdict(list)
    for line in out.lines():
        key, _, path = line.rstrip("\n").partition("|")
        got[key].append(path.split(" "))
    want = expected_paths(chain, workers, keys)
    assert set(got) == set(want)
    free_counts: dict = defaultdict(list)
    for key, paths in want.items():
        assert len(got[key]) == len(paths), key
        for g, w in zip(got[key], paths, strict=True):
            assert len(g) == len(w), (key, g, w)
            for gs, ws in zip(g, w, strict=True):
                if ws is None:  # an unkeyed state after the stream spread over workers
                    name, _, n = gs.partition("#")
                    free_counts[name].append((key, int(n)))
                else:
                    assert gs == ws, (key, g, w)
    for name, counts in free_counts.items():
        # One state instance saw every record exactly once, and each key in order.
        assert sorted(n for _, n in counts) == list(range(1, len(keys) + 1)), name
        by_key: dict = defaultdict(list)
        for key, n in counts:
            by_key[key].append(n)
        assert all(v == sorted(v) for v in by_key.values()), name


def test_topology_cases_cover_every_chain_and_worker_count():
    cases = topology_cases()
    assert {c for c, _ in cases} == set(CHAINS) and len(CHAINS) == 84
    assert {w for _, w in cases} == {1, 2, 3}


def test_placement_failure_on_a_joiner_stops_every_worker(receivers, tmp_path):
    """worker2's source port is taken: every worker exits non-zero, naming the cause."""
    import socket

    (out,) = receivers(1)
    busy = socket.create_server(("127.0.0.1", 0))
    cluster = Cluster(
        str(APPS / "alphabet.py"),
        2,
        [out.port],
        log_dir=str(tmp_path),
        inputs=[free_port(), busy.getsockname()[1]],
    )
    try:
        workers = [cluster.start_worker(0), cluster.start_worker(1)]
        for w in workers:
            assert w.proc.wait(60) != 0
        why = f"cannot listen on 127.0.0.1:{busy.getsockname()[1]}"
        assert why in workers[0].log()
        assert why in workers[1].log() or "went away before the cluster started" in (
            workers[1].log()
        )
    finally:
        cluster.stop()
        busy.close()


def test_a_joiner_with_other_settings_is_refused(receivers, clusters):
    (out,) = receivers(1)
    cluster = clusters(str(APPS / "alphabet.py"), 2, [out.port])
    first = cluster.start_worker(0)
    odd = cluster.start_worker(1, "--window", "2", "--batch-size", "100")
    assert odd.proc.wait(60) == 1
    assert "settings differ from the initializer's: --batch-size 100" in odd.log()
    assert "--window 2 (the cluster's: 4)" in odd.log()
    good = cluster.start_worker(1)
    first.wait_ready(60)
    good.wait_ready(60)
