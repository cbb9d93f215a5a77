"""Resilience: workers killed with SIGKILL at a random moment while data flows, restarted
with the same command; checkpoints, rollback and a replaying sender keep the final
per-key state exact. Real worker processes, real sender and receiver."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actorflow.control import query_status
from actorflow.testing import AckedSender, Cluster, WorkerProcess
from actorflow.tools.gen import alphabet_frames, alphabet_totals
from actorflow.tools.send import send
from tests.conftest import APPS, ROOT, Collector, group_alive

pytestmark = pytest.mark.integration

ALPHABET = str(APPS / "alphabet.py")


class Run:
    """A cluster, one receiver, and a replaying sender in a thread."""

    def __init__(
        self, tmp_path: Path, workers: int, app: str = ALPHABET, extra=(), receiver=True
    ) -> None:
        self.out = Collector()
        if receiver:
            self.out.receiver.start()
        self.cluster = Cluster(
            app,
            workers,
            [self.out.port],
            source_name="alphabet",
            log_dir=str(tmp_path),
            extra=["--time-between-checkpoints", "0.3", *extra],
        )
        self.total = 0  # messages the replaying sender sends
        self.sender: AckedSender | None = None

    def send_acked(self, frames: list[bytes], stream: str = "votes", worker: int = 0) -> None:
        self.total += len(frames)
        # a few seconds of data, in small batches: crashes land mid-stream
        self.sender = self.cluster.send_acked(
            worker, frames, stream, batch_size=250, interval_ms=8, patience=90, log=None
        )

    def sending(self) -> bool:
        return self.sender is not None and self.sender.alive()

    def finish(self, timeout: float = 120) -> dict:
        assert self.sender is not None
        return self.sender.finish(timeout)

    def kill(self, i: int, wait: bool = True, mid_stream: bool = True) -> None:
        """SIGKILL worker i's command; its guard ends its actors (``wait``: until gone).

        ``mid_stream``: first check that the crash comes while the replaying sender is
        still sending and outputs are missing, so the test exercises a recovery.
        """
        if mid_stream:
            assert self.sending(), "the sender finished"
            distinct = len(set(self.out.lines()))  # replays repeat lines: count them once
            assert distinct < self.total, "every output was there before the kill"
        w = self.current(i)
        w.proc.kill()
        w.proc.wait(10)
        deadline = time.monotonic() + (10 if wait else 0)
        while w.pgid and group_alive(w.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_outputs(self, n: int, timeout: float = 60) -> None:
        """Wait until ``n`` outputs arrived (a moment in the middle of the stream)."""
        assert self.out.wait_for(n, timeout), f"only {len(self.out.lines())} outputs"

    def current(self, i: int) -> WorkerProcess:
        return [w for w in self.cluster.workers if self.cluster.names[i] in w.log_path][-1]

    def restart(self, i: int) -> WorkerProcess:
        """Worker i again, with the same command."""
        w = self.cluster.start_worker(i)
        w.wait_ready(60)
        return w

    def final_totals(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for line in self.out.lines():
            key, _, value = line.rstrip("\n").partition(" => ")
            last[key] = int(value)
        return last

    def wait_totals(self, want: dict[str, int], timeout: float = 30) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.final_totals()
            if got == want:
                return got
            time.sleep(0.1)
        return self.final_totals()

    def close(self) -> None:
        if self.sender is not None:
            self.sender.stop.set()
        self.cluster.stop()
        self.out.receiver.stop()
        for w in self.cluster.workers:
            if w.pgid is not None:
                assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"


@pytest.fixture
def runs(tmp_path) -> Iterator:
    made: list[Run] = []

    def make(workers: int, **kw) -> Run:
        run = Run(tmp_path / f"run{len(made)}", workers, **kw)
        made.append(run)
        return run

    yield make
    for run in made:
        run.close()


@pytest.mark.parametrize("victim", [1, 0], ids=["joiner", "initializer"])
def test_kill_a_worker_and_restart_it_state_is_exact(victim, runs):
    seed = random.randrange(1 << 30)
    run = runs(2)
    run.cluster.start()
    frames = alphabet_frames(100_000, seed=seed % 1000)
    run.send_acked(frames)
    run.wait_outputs(random.Random(seed).randrange(1_000, 40_000))  # a random moment
    run.kill(victim)
    run.restart(victim)
    summary = run.finish()
    assert summary["acked"] == len(frames) and summary["reconnects"] >= 1, (seed, summary)
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want, f"seed {seed}"
    # README: "Outputs produced after the last checkpoint are produced again: the same
    # values, in the same per-key order".
    assert_replays_repeat(run.out.lines(), frames)
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["state"] == "running" and status["epoch"] >= 2
    assert status["last_checkpoint"] >= 1


def test_several_crash_restart_rounds(runs):
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run = runs(3)
    run.cluster.start()
    frames = alphabet_frames(150_000, seed=seed % 997)
    run.send_acked(frames)
    for round_, victim in enumerate((1, 2, 0, 1)):
        run.wait_outputs(len(run.out.lines()) + rng.randrange(1_000, 8_000))
        # Every other round restarts at once, while the dead worker's processes may
        # still hold its ports for a moment.
        run.kill(victim, wait=round_ % 2 == 0)
        run.restart(victim)
    summary = run.finish()
    assert summary["acked"] == len(frames), (seed, summary)
    assert summary["reconnects"] >= 1, (seed, summary)
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want, f"seed {seed}"
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["epoch"] >= 5, "each of the 4 crashes brought a rollback"
    assert_replays_repeat(run.out.lines(), frames)


def test_two_workers_down_at_once(runs):
    run = runs(3)
    run.cluster.start()
    frames = alphabet_frames(80_000, seed=21)
    run.send_acked(frames)
    run.wait_outputs(5_000)
    run.kill(1)
    run.kill(2)
    back = [run.cluster.start_worker(2), run.cluster.start_worker(1)]  # both, any order
    for w in back:
        w.wait_ready(60)
    summary = run.finish()
    assert summary["reconnects"] >= 1, summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want
    assert query_status(("127.0.0.1", run.cluster.control))["epoch"] >= 2


SLOW_SNAPSHOT_APP = '''
import os, struct, time
import actorflow as wallaroo
from alphabet import decode_votes, extract_letter, encode_votes


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(
        "alphabet", wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode_votes))
    return wallaroo.build_application("slow_snapshot", votes.key_by(extract_letter)
        .to(add_votes).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes)))


class SlowTotal:
    """Its snapshot takes a while and leaves a mark, so a test can crash a worker
    in the middle of a checkpoint."""

    def __init__(self):
        self.total = 0

    def __getstate__(self):
        marker = os.environ.get("ACTORFLOW_TEST_SNAPSHOT_MARK")
        if marker and not os.path.exists(marker):
            with open(marker + ".tmp", "w") as f:
                f.write(str(os.getpgid(0)))  # the worker whose snapshot is under way
            os.rename(marker + ".tmp", marker)
            time.sleep(1.0)
        return {"total": self.total}


@wallaroo.state_computation(name="add votes", state=SlowTotal)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)
'''


def test_crash_during_a_checkpoint(runs, tmp_path, monkeypatch):
    app = tmp_path / "slow_snapshot.py"
    app.write_text(SLOW_SNAPSHOT_APP)
    monkeypatch.syspath_prepend(str(APPS))
    monkeypatch.setenv("PYTHONPATH", f"{APPS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    mark = tmp_path / "snapshotting"
    monkeypatch.setenv("ACTORFLOW_TEST_SNAPSHOT_MARK", str(mark))
    run = runs(2, app=str(app))
    run.cluster.start()
    frames = alphabet_frames(60_000, seed=5)
    run.send_acked(frames)
    deadline = time.monotonic() + 30
    while not mark.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mark.exists(), "no snapshot started"
    # Kill the worker whose state actor is writing its snapshot right now.
    writing = int(mark.read_text())
    victim = next(i for i, w in enumerate(run.cluster.workers) if w.pgid == writing)
    run.kill(victim)
    run.restart(victim)
    summary = run.finish()
    assert summary["reconnects"] >= 1, summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want
    assert query_status(("127.0.0.1", run.cluster.control))["epoch"] >= 2


def test_whole_cluster_shutdown_and_restart_resumes_from_files(runs):
    run = runs(2)
    run.cluster.start()
    first = alphabet_frames(20_000, seed=1)
    run.send_acked(first, stream="first")
    run.finish()
    want = alphabet_totals(first)
    assert run.wait_totals(want) == want
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "actorflow",
            "shutdown",
            "--control",
            f"127.0.0.1:{run.cluster.control}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "at checkpoint" in done.stdout
    for w in list(run.cluster.workers):
        assert w.proc.wait(30) == 0, w.log()
    # Same commands again: the cluster resumes with its state.
    starts = [run.cluster.start_worker(i) for i in (1, 0)]
    for w in starts:
        w.wait_ready(60)
    second = alphabet_frames(20_000, seed=2)
    run.send_acked(second, stream="second")
    run.finish()
    for k, v in alphabet_totals(second).items():
        want[k] = want.get(k, 0) + v
    assert run.wait_totals(want) == want
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["last_checkpoint"] >= 2


def test_plain_sender_reports_possible_loss(runs):
    run = runs(2, extra=["--time-between-checkpoints", "600"])
    run.cluster.start()
    frames = alphabet_frames(5_000, seed=8)
    send("127.0.0.1", run.cluster.inputs[0], frames, log=None)  # plain: cannot replay
    assert run.out.wait_for(len(frames), 30)
    run.kill(1, mid_stream=False)  # after a plain sender: what matters is the count
    run.restart(1)
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["records_possibly_lost"] == len(frames)
    log = run.current(0).log()
    assert f"up to {len(frames)} records from senders that cannot replay" in log


def test_stale_files_are_refused_with_the_command_to_clean_them(tmp_path, runs):
    run = runs(1)
    run.cluster.start()
    run.cluster.stop()
    folder = run.cluster.resilience_dir(0)
    # The same folder, but a command for another cluster shape: stale.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actorflow",
            "worker",
            "--app",
            ALPHABET,
            *run.cluster.args(0),
            "--worker-count",
            "2",
            "--worker-name",
            "worker1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "records --worker-count 1" in proc.stderr
    assert f"actorflow clean --resilience-dir {folder}" in proc.stderr
    assert "actorflow-alphabet-worker1.cluster.json" in proc.stderr
    cleaned = subprocess.run(
        [sys.executable, "-m", "actorflow", "clean", "--resilience-dir", folder],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cleaned.returncode == 0 and "removed" in cleaned.stdout
    assert not [p for p in os.listdir(folder) if p.startswith("actorflow-")]
    # A joiner whose files belong to another cluster is refused; the cluster is unharmed.
    other = runs(2)
    other.cluster.start()
    other.cluster.stop()
    fresh = runs(2)
    fresh.cluster.control = other.cluster.control  # a new cluster where the old one was
    fresh.cluster.start_worker(0)
    stale = fresh.cluster.args(1)
    stale[stale.index("--resilience-dir") + 1] = other.cluster.resilience_dir(1)
    proc = subprocess.run(
        [sys.executable, "-m", "actorflow", "worker", "--app", ALPHABET, *stale],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 1
    assert "belong to another cluster" in proc.stderr
    assert f"actorflow clean --resilience-dir {other.cluster.resilience_dir(1)}" in proc.stderr
    good = fresh.cluster.start_worker(1)
    good.wait_ready(60)
    fresh.cluster.workers[0].wait_ready(60)


def dedupe_per_key(lines: list[str]) -> dict[str, list[int]]:
    """Per key, the outputs with replayed ones removed: a replay repeats values the key
    had already output, in the same order, so a value seen before is a duplicate."""
    seen: dict[str, list[int]] = {}
    for line in lines:
        key, _, value = line.rstrip("\n").partition(" => ")
        values = seen.setdefault(key, [])
        if int(value) not in values:
            values.append(int(value))
    return seen


def assert_replays_repeat(lines: list[str], frames: list[bytes]) -> None:
    """Each key's outputs are its running totals in order, where a replay may go back
    to an earlier total and repeat from there, in the same order: nothing skipped,
    nothing new, nothing out of order."""
    want = running_totals(frames)
    where: dict[str, int] = {}  # per key: index of the next expected total
    for n, line in enumerate(lines):
        key, _, value = line.rstrip("\n").partition(" => ")
        totals, pos, v = want[key], where.get(key, 0), int(value)
        if pos < len(totals) and totals[pos] == v:
            where[key] = pos + 1
            continue
        assert v in totals[:pos], f"output {n} {line!r}: neither the next total nor a repeat"
        where[key] = totals.index(v) + 1  # a replay: it must go on in order from here
    assert {k: where.get(k, 0) for k in want} == {k: len(v) for k, v in want.items()}


def wait_status(run: Run, pred, timeout: float = 30) -> dict:
    """Poll the cluster's status until ``pred(status)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        status = query_status(("127.0.0.1", run.cluster.control))
        if pred(status):
            return status
        assert time.monotonic() < deadline, f"status never matched: {status}"
        time.sleep(0.1)


def sinks_hold(status: dict) -> int:
    """Records the sinks have taken in (and hold, with no receiver)."""
    return sum(a.get("records_in", 0) for k, a in status.get("actors", {}).items()
               if k.startswith("sink"))


def running_totals(frames: list[bytes]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    total: dict[str, int] = {}
    for f in frames:
        letter, votes = chr(f[4]), int.from_bytes(f[5:9], "big")
        total[letter] = total.get(letter, 0) + votes
        out.setdefault(letter, []).append(total[letter])
    return out


def test_output_held_for_an_absent_receiver_survives_a_crash(runs):
    """The receiver is down while a worker crashes: output held by the sinks is not
    covered by a checkpoint until written, so the replay produces it again."""
    run = runs(2, receiver=False)  # the receiver is away
    run.cluster.start()
    frames = alphabet_frames(20_000, seed=31)
    run.send_acked(frames)
    wait_status(run, lambda s: sinks_hold(s) > 0)  # data flows into the sinks, which hold it
    run.kill(1)
    run.restart(1)
    run.out.receiver.start()
    summary = run.finish()
    assert summary["reconnects"] >= 1, summary
    want = running_totals(frames)
    deadline = time.monotonic() + 30
    while dedupe_per_key(run.out.lines()) != want and time.monotonic() < deadline:
        time.sleep(0.1)
    # Every running total of every key arrives, in order; replays only repeat values.
    assert dedupe_per_key(run.out.lines()) == want
    assert_replays_repeat(run.out.lines(), frames)


UNPICKLABLE_APP = """
import threading
import actorflow as wallaroo
from alphabet import decode_votes, extract_letter, encode_votes


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(
        "alphabet", wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode_votes))
    return wallaroo.build_application("locked", votes.key_by(extract_letter)
        .to(add_votes).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes)))


class Locked:
    def __init__(self):
        self.total = 0
        self.lock = threading.Lock()  # cannot be pickled: checkpoints fail


@wallaroo.state_computation(name="add votes", state=Locked)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)
"""


def test_a_failing_checkpoint_is_reported_and_processing_goes_on(runs, tmp_path, monkeypatch):
    app = tmp_path / "locked.py"
    app.write_text(UNPICKLABLE_APP)
    monkeypatch.setenv("PYTHONPATH", f"{APPS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    run = runs(1, app=str(app))
    run.cluster.start()
    completed = []  # the last completed checkpoint once one failed (one may complete
    for seed in (1, 2):  # before the first record reaches the state step: no state yet)
        frames = alphabet_frames(3_000, seed=seed)
        send("127.0.0.1", run.cluster.inputs[0], frames, log=None)
        failed = wait_status(run, lambda s: s["last_checkpoint_failure"])
        completed.append(failed["last_checkpoint"])
    assert run.out.wait_for(6_000, 30), run.out.receiver.messages
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["processing_messages"] and status["last_checkpoint"] == completed[0] <= 1
    assert "cannot be pickled" in status["last_checkpoint_failure"] or (
        "pickle" in status["last_checkpoint_failure"]
    )
    assert "cannot write checkpoint" in run.current(0).log()


def test_a_second_copy_of_a_running_worker_is_refused(runs):
    run = runs(2)
    run.cluster.start()
    twin = run.cluster.start_worker(1)
    assert twin.proc.wait(60) == 1
    assert "is running already" in twin.log()
    frames = alphabet_frames(5_000, seed=3)
    send("127.0.0.1", run.cluster.inputs[0], frames, log=None)
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want
    assert query_status(("127.0.0.1", run.cluster.control))["state"] == "running"


def test_while_the_initializer_is_down_the_others_keep_processing(runs):
    """The initializer owns partitions too; while it is down, keys other workers own
    keep flowing (records for its keys are dropped until the rollback replays them)."""
    from actorflow.partitioning import owners, partition_of

    run = runs(2)
    run.cluster.start()
    table = owners(120, run.cluster.names)
    theirs = [c for c in "abcdefghijklmnopqrstuvwxyz" if table[partition_of(c, 120)] == "worker2"]
    assert theirs, "worker2 owns no letter"
    run.kill(0, mid_stream=False)  # the initializer, before the stream
    frames = alphabet_frames(60_000, seed=17)  # more than the windows towards worker1 hold
    send("127.0.0.1", run.cluster.inputs[1], frames, log=None)  # worker2's source
    want = {k: v for k, v in running_totals(frames).items() if k in theirs}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        got = {k: v for k, v in dedupe_per_key(run.out.lines()).items() if k in theirs}
        if got == want:
            break
        time.sleep(0.1)
    assert got == want
    assert "does not answer; its keys' records are dropped" in run.current(1).log()
    run.restart(0)  # it comes back and the cluster rolls back to its last checkpoint
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["state"] == "running" and status["records_possibly_lost"] > 0
    # README: the records dropped for a lost worker are "counted in actorflow status".
    assert status["records_dropped_for_lost_workers"] > 0, status
