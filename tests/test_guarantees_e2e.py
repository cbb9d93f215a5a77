"""The README's guarantees, end to end (issue 13, part A): real worker processes, real
TCP senders and receivers, expected values computed here.

- the examples and API features no other end-to-end test runs: ``vote_merge`` (two
  sources, ``merge``, ``collect``), a ``GenSourceConfig`` source, ``to_sinks`` to two
  receivers, ``state_computation_multi``, on 1 and 3 workers;
- unkeyed (``collect``) state exact after a worker is killed mid-stream;
- a receiver away for longer than the sink buffer lasts: nothing lost, senders blocked,
  no checkpoint completes meanwhile;
- every worker of a cluster killed mid-stream and started again with the same commands.

Every crash test checks that the crash really hit mid-stream (outputs short of the total
at the kill, the senders reconnected, the epoch went up), so it cannot pass by a sender
that finished before the kill.
"""

from __future__ import annotations

import random
import re
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actorflow.control import query_status
from actorflow.testing import Cluster, WorkerProcess, free_port
from actorflow.tools.gen import alphabet_frames
from actorflow.tools.receive import Receiver
from actorflow.tools.send import send, send_acked
from tests.conftest import APPS, ROOT, Collector, group_alive

pytestmark = pytest.mark.integration

TEST_APPS = ROOT / "tests" / "apps"
VOTE_MERGE = str(APPS / "vote_merge.py")
ALPHABET = str(APPS / "alphabet.py")


# --------------------------------------------------------------------------
# Harness: clusters with several --in / --out addresses per worker, receivers that can
# leave and come back, senders in threads that report their progress.


class AppCluster(Cluster):
    """A :class:`Cluster` whose workers may have several named sources and several
    ``--out`` addresses; each worker's command is fixed once, so a restart runs exactly
    the same command line."""

    def __init__(
        self,
        app: str,
        workers: int,
        outs: list[int],
        *,
        sources: tuple[str, ...] = ("in",),
        extra: tuple[str, ...] = (),
        log_dir: str,
    ) -> None:
        super().__init__(
            app, workers, outs[:1], inputs=[None] * workers, extra=list(extra), log_dir=log_dir
        )
        self.out_ports = list(outs)
        self.source_names = sources
        self.ports = {name: [free_port() for _ in range(workers)] for name in sources}
        self._commands: dict[int, list[str]] = {}

    def args(self, i: int) -> list[str]:
        if i not in self._commands:
            a = super().args(i)
            a[a.index("--out") + 1] = ",".join(f"127.0.0.1:{p}" for p in self.out_ports)
            if self.source_names:
                ins = ",".join(f"{n}@127.0.0.1:{self.ports[n][i]}" for n in self.source_names)
                a = ["--in", ins, *a]
            self._commands[i] = a
        return list(self._commands[i])

    def port(self, source: str, worker: int = 0) -> int:
        return self.ports[source][worker]

    def current(self, i: int) -> WorkerProcess:
        """The latest process started for worker i."""
        return [w for w in self.workers if f"{self.names[i]}-" in Path(w.log_path).name][-1]

    def kill(self, i: int) -> None:
        """SIGKILL worker i's command; its guard then ends its actors (wait until gone)."""
        w = self.current(i)
        assert w.proc is not None and w.proc.poll() is None, f"{self.names[i]} is not running"
        w.proc.kill()
        w.proc.wait(10)
        deadline = time.monotonic() + 15
        while w.pgid and group_alive(w.pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (w.pgid and group_alive(w.pgid)), f"{self.names[i]}'s actors outlived it"

    def status(self) -> dict:
        return query_status(("127.0.0.1", self.control))


class Receivers:
    """A :class:`Collector` that can leave (close its port) and come back on the same port,
    keeping every payload it got in arrival order."""

    def __init__(self) -> None:
        self.c = Collector()
        self.c.receiver.start()
        self.port = self.c.port
        self.away = False

    def count(self) -> int:
        with self.c._lock:
            return len(self.c.payloads)

    def lines(self) -> list[str]:
        return self.c.lines()

    def wait_count(self, n: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count() >= n:
                return True
            time.sleep(0.02)
        return self.count() >= n

    def leave(self) -> None:
        self.c.receiver.stop()
        self.away = True

    def come_back(self) -> None:
        self.c.receiver = Receiver("127.0.0.1", self.port, framed=True, sink=self.c._add, log=None)
        self.c.receiver.start()
        self.away = False

    def stop(self) -> None:
        if not self.away:
            self.c.receiver.stop()


class Sender(threading.Thread):
    """A real sender (``send``, or ``send_acked`` with a stream name) in a thread.

    ``pos`` is how many frames it has handed to its socket (acknowledged senders report
    after every batch); at each of ``pauses`` it stops, its connection open, until
    ``resume()``."""

    def __init__(
        self,
        port: int,
        frames: list[bytes],
        *,
        stream: str | None = None,
        batch_size: int = 250,
        interval_ms: float = 0.0,
        pauses: tuple[int, ...] = (),
    ) -> None:
        super().__init__(daemon=True)
        self.port, self.frames, self.stream = port, frames, stream
        self.batch_size, self.interval_ms = batch_size, interval_ms
        self.pauses = list(pauses)
        self.reached = [threading.Event() for _ in pauses]
        self.released = [threading.Event() for _ in pauses]
        self.pausing = 0  # (the sender's thread) the pause it heads for
        self.resumed = 0  # (the test's thread) pauses released so far
        self.stop_sending = threading.Event()
        self.pos = 0
        self.result: dict | None = None
        self.error: BaseException | None = None

    def _progress(self, messages: int, _bytes: int, _seconds: float) -> None:
        self.pos = max(self.pos, messages)
        k = self.pausing
        if k < len(self.pauses) and messages >= self.pauses[k]:
            self.reached[k].set()
            self.released[k].wait()
            self.pausing += 1

    def wait_paused(self, timeout: float = 60.0) -> bool:
        """Wait until the sender stands at its next pause."""
        return self.reached[self.resumed].wait(timeout)

    def resume(self) -> None:
        self.released[self.resumed].set()
        self.resumed += 1

    def run(self) -> None:
        try:
            if self.stream is None:
                self.result = send(
                    "127.0.0.1",
                    self.port,
                    self.frames,
                    batch_size=self.batch_size,
                    interval_ms=self.interval_ms,
                    log=None,
                    stop=self.stop_sending,
                    connect_timeout=30,
                )
            else:
                self.result = send_acked(
                    "127.0.0.1",
                    self.port,
                    self.frames,
                    stream=self.stream,
                    batch_size=self.batch_size,
                    interval_ms=self.interval_ms,
                    patience=90,
                    log=None,
                    stop=self.stop_sending,
                    progress=self._progress,
                )
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout: float = 120.0) -> dict:
        self.join(timeout)
        assert not self.is_alive(), f"the sender to port {self.port} did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result

    def abort(self) -> None:
        self.stop_sending.set()
        for e in self.released:
            e.set()


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    try:
        yield made
    finally:
        made.close()


class Lab:
    """Everything a test starts, stopped on teardown, pass or fail; then no process of any
    worker may be left."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clusters: list[AppCluster] = []
        self.receivers: list[Receivers] = []
        self.senders: list[Sender] = []

    def receiver(self) -> Receivers:
        r = Receivers()
        self.receivers.append(r)
        return r

    def cluster(self, app: str, workers: int, outs: list[int], **kw) -> AppCluster:
        log_dir = self.tmp_path / f"cluster{len(self.clusters)}"
        log_dir.mkdir()
        c = AppCluster(app, workers, outs, log_dir=str(log_dir), **kw)
        self.clusters.append(c)
        return c

    def sender(self, port: int, frames: list[bytes], **kw) -> Sender:
        s = Sender(port, frames, **kw)
        self.senders.append(s)
        s.start()
        return s

    def close(self) -> None:
        for s in self.senders:
            s.abort()
        for c in self.clusters:
            c.stop()
        for r in self.receivers:
            r.stop()
        for s in self.senders:
            s.join(30)
        for c in self.clusters:
            for w in c.workers:
                if w.pgid is not None:
                    assert not group_alive(w.pgid), f"worker left processes in group {w.pgid}"
                assert w.proc is None or w.proc.poll() is not None, "a worker command is left"
        assert not [s for s in self.senders if s.is_alive()], "a sender thread is left"


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    assert check(), f"timed out after {timeout:g} s waiting for {what}"


# --------------------------------------------------------------------------
# Expected values, computed here from the frames sent


def vote_frame(letter: str, votes: int, pad: int = 0) -> bytes:
    payload = struct.pack(">sI", letter.encode(), votes) + b"." * pad
    return struct.pack(">I", len(payload)) + payload


def votes_of(frames: list[bytes]) -> list[tuple[str, int]]:
    return [(chr(f[4]), int.from_bytes(f[5:9], "big")) for f in frames]


def running_totals(votes: list[tuple[str, int]]) -> dict[str, list[int]]:
    total: dict[str, int] = defaultdict(int)
    out: dict[str, list[int]] = defaultdict(list)
    for letter, n in votes:
        total[letter] += n
        out[letter].append(total[letter])
    return dict(out)


def totals(votes: list[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for letter, n in votes:
        out[letter] += n
    return dict(out)


def per_key(lines: list[str], sep: str = " => ") -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        key, _, value = line.rstrip("\n").partition(sep)
        out[key].append(int(value.split()[0]))
    return dict(out)


def dedupe_per_key(lines: list[str]) -> dict[str, list[int]]:
    """Per key, outputs without replays: a replay repeats a value the key output before."""
    seen: dict[str, list[int]] = defaultdict(list)
    for key, values in per_key(lines).items():
        for v in values:
            if v not in seen[key]:
                seen[key].append(v)
    return dict(seen)


def latest_per_key(lines: list[str]) -> dict[str, int]:
    return {k: v[-1] for k, v in per_key(lines).items()}


STANDING = re.compile(r"^(\w) => (\d+) \(leader (\w) with (\d+)\)$")


def leader_of(board: dict[str, int]) -> tuple[str, int]:
    """The letter with the highest total, ties to the alphabetically smallest."""
    letter = min(board, key=lambda k: (-board[k], k))
    return letter, board[letter]


def check_leader_board(lines: list[str], sources: list[list[tuple[str, int]]]) -> None:
    """Every line must be the leader board right after the next vote of one of the
    sources (each source's votes in order, any interleaving), and all votes be used."""
    frontier: dict[tuple[int, ...], dict[str, int]] = {tuple(0 for _ in sources): {}}
    for n, line in enumerate(lines):
        m = STANDING.match(line.rstrip("\n"))
        assert m, f"output {n} is not a standing: {line!r}"
        letter, total, leader, lead = m[1], int(m[2]), m[3], int(m[4])
        following: dict[tuple[int, ...], dict[str, int]] = {}
        for pos, board in frontier.items():
            for s, votes in enumerate(sources):
                i = pos[s]
                if i < len(votes) and votes[i][0] == letter:
                    if board.get(letter, 0) + votes[i][1] != total:
                        continue
                    after = {**board, letter: total}
                    if leader_of(after) == (leader, lead):
                        following[pos[:s] + (i + 1,) + pos[s + 1 :]] = after
        assert following, f"output {n} {line!r} follows no order of the votes sent"
        frontier = following
    assert tuple(len(v) for v in sources) in frontier, "not every vote made an output"


def unique_votes(n: int, seed: int, letters: str = "abcdefghijklmnopqrstuvwxyz") -> list[bytes]:
    """Alphabet frames with votes drawn from a wide range, so that a standing tells
    which vote made it."""
    rng = random.Random(seed)
    return [vote_frame(rng.choice(letters), rng.randrange(1, 1_000_000)) for _ in range(n)]


# --------------------------------------------------------------------------
# End to end, on 1 and 3 workers


@pytest.mark.parametrize("workers", [1, 3])
def test_vote_merge_two_senders_leader_board(workers, lab):
    # README "Per-key order": "Records of one key from one source connection are processed
    # and output in order" and "A state computation with no key_by before it has a single
    # state object" (vote_merge: two sources, merge, collect into one leader board).
    out = lab.receiver()
    cluster = lab.cluster(VOTE_MERGE, workers, [out.port], sources=("east", "west")).start()
    east, west = unique_votes(8_000, seed=1), unique_votes(8_000, seed=2, letters="aeiouxyz")
    last = workers - 1  # the two senders on two different workers when there are several
    senders = [
        lab.sender(cluster.port("east", 0), east),
        lab.sender(cluster.port("west", last), west),
    ]
    for s in senders:
        s.finish(60)
    n = len(east) + len(west)
    assert out.wait_count(n, 60), f"{out.count()} of {n} standings"
    lines = out.lines()
    assert len(lines) == n  # one output per vote, none twice
    check_leader_board(lines, [votes_of(east), votes_of(west)])
    board = totals(votes_of(east) + votes_of(west))
    assert latest_per_key(lines) == board
    assert STANDING.match(lines[-1].rstrip())[3] == leader_of(board)[0]
    status = cluster.status()
    state = [k for k in status["actors"] if k.startswith("state")]
    assert len(state) == 1, f"unkeyed state on one worker only: {state}"
    assert status["actors"][state[0]]["records_in"] == n


@pytest.mark.parametrize("workers", [1, 3])
def test_generator_source(workers, lab):
    # README "Per-key order": "a state computation keeps one state object per key, on the
    # one worker that owns the key's partition" (GenSourceConfig as the source).
    out = lab.receiver()
    count = 6_000
    cluster = lab.cluster(
        str(TEST_APPS / "gen_counter.py"),
        workers,
        [out.port],
        sources=(),
        extra=("--count", str(count)),
    ).start()
    want: dict[str, list[int]] = defaultdict(list)
    sums: dict[str, int] = defaultdict(int)
    for n in range(1, count + 1):
        sums[str(n % 7)] += n
        want[str(n % 7)].append(sums[str(n % 7)])
    assert out.wait_count(count, 60), f"{out.count()} of {count} outputs"
    got = per_key(out.lines())
    assert got == dict(want)
    status = cluster.status()
    states = {k: v["keys"] for k, v in status["actors"].items() if k.startswith("state")}
    assert sum(states.values()) == 7
    if workers > 1:
        assert sum(1 for v in states.values() if v) > 1, f"keys on one worker only: {states}"


@pytest.mark.parametrize("workers", [1, 3])
def test_to_sinks_every_receiver_gets_every_output(workers, lab):
    # README API: ".to_sinks([cfg, ...])"; "Per-key order": outputs "in order" per key,
    # here at each of two receivers, each through its own encoder.
    first, second = lab.receiver(), lab.receiver()
    cluster = lab.cluster(
        str(TEST_APPS / "two_sinks.py"), workers, [first.port, second.port]
    ).start()
    frames = alphabet_frames(12_000, seed=40 + workers)
    lab.sender(cluster.port("in", 0), frames).finish(60)
    want = running_totals(votes_of(frames))
    for r in (first, second):
        assert r.wait_count(len(frames), 60), f"{r.count()} of {len(frames)} outputs"
    assert len(first.lines()) == len(second.lines()) == len(frames)
    assert per_key(first.lines(), " => ") == want
    assert per_key(second.lines(), ":") == want


@pytest.mark.parametrize("workers", [1, 3])
def test_state_computation_multi(workers, lab):
    # README API: "state_computation_multi" (a list of outputs per record, maybe empty);
    # "Per-key order": per key, outputs in order.
    out = lab.receiver()
    cluster = lab.cluster(str(TEST_APPS / "multi_state.py"), workers, [out.port]).start()
    frames = alphabet_frames(12_000, seed=60 + workers)
    want: dict[str, list[str]] = defaultdict(list)
    total: dict[str, int] = defaultdict(int)
    for letter, votes in votes_of(frames):
        total[letter] += votes
        want[letter] += [f"{total[letter]} #{j}" for j in range(votes % 3)]
    n = sum(len(v) for v in want.values())
    assert n < len(frames)  # some records make no output, others two
    lab.sender(cluster.port("in", 0), frames).finish(60)
    assert out.wait_count(n, 60), f"{out.count()} of {n} outputs"
    got: dict[str, list[str]] = defaultdict(list)
    for line in out.lines():
        key, _, rest = line.rstrip("\n").partition(" => ")
        got[key].append(rest)
    assert dict(got) == dict(want)
    status = cluster.status()
    assert sum(v["records_in"] for k, v in status["actors"].items() if k.startswith("state")) == (
        len(frames)
    )


# --------------------------------------------------------------------------
# Crashes


def test_unkeyed_state_exact_after_its_worker_is_killed(lab):
    # README "Exactly-once state, at-least-once output": "after a crash and restart, every
    # key's state is as if nothing had happened, given a replaying sender"; here the single
    # state object of a collect (vote_merge's leader board), on the worker that is killed.
    out = lab.receiver()
    cluster = lab.cluster(
        VOTE_MERGE,
        2,
        [out.port],
        sources=("east", "west"),
        extra=("--time-between-checkpoints", "0.3"),
    ).start()
    status = cluster.status()
    (board,) = [k for k in status["actors"] if k.startswith("state")]
    victim = cluster.names.index(board.split("@")[1])  # the worker holding the board
    epoch = status["epoch"]
    east, west = unique_votes(30_000, seed=11), unique_votes(30_000, seed=12)
    n = len(east) + len(west)
    senders = [
        lab.sender(cluster.port("east", 0), east, stream="east", batch_size=200, interval_ms=8),
        lab.sender(cluster.port("west", 1), west, stream="west", batch_size=200, interval_ms=8),
    ]
    assert out.wait_count(n // 6, 60), "no standings arrived"
    wait_until(lambda: cluster.status()["last_checkpoint"] >= 1, 30, "a checkpoint")
    at_kill = out.count()
    cluster.kill(victim)
    assert at_kill < n and all(s.is_alive() for s in senders), "the kill came after the stream"
    cluster.start_worker(victim).wait_ready(60)
    results = [s.finish(120) for s in senders]
    assert [r["acked"] for r in results] == [len(east), len(west)]
    assert all(r["reconnects"] >= 1 for r in results), results  # the crash hit them
    want = totals(votes_of(east) + votes_of(west))
    wait_until(lambda: latest_per_key(out.lines()) == want, 30, "the exact totals")
    last = STANDING.match(out.lines()[-1].rstrip())
    assert (last[3], int(last[4])) == leader_of(want)
    after = cluster.status()
    assert after["epoch"] > epoch and after["state"] == "running"


def test_whole_cluster_killed_and_restarted(lab):
    # README "Shutting down a cluster": "Terminating all workers does the same from the last
    # periodic checkpoint" ("starting the same commands again resumes where it stopped");
    # "Recovery": new actors "with a higher epoch".
    out = lab.receiver()
    cluster = lab.cluster(
        ALPHABET,
        2,
        [out.port],
        sources=("alphabet",),
        extra=("--time-between-checkpoints", "0.3"),
    ).start()
    epoch = cluster.status()["epoch"]
    # One acknowledged stream per worker; each letter comes from one stream only, so its
    # outputs have one order to keep.
    first = alphabet_frames(40_000, seed=3, letters="abcdefghijklm")
    second = alphabet_frames(40_000, seed=4, letters="nopqrstuvwxyz")
    n = len(first) + len(second)
    senders = [
        lab.sender(cluster.port("alphabet", 0), first, stream="one", batch_size=200, interval_ms=8),
        lab.sender(
            cluster.port("alphabet", 1), second, stream="two", batch_size=200, interval_ms=8
        ),
    ]
    assert out.wait_count(n // 6, 60), "no outputs arrived"
    wait_until(lambda: cluster.status()["last_checkpoint"] >= 1, 30, "a checkpoint")
    checkpoint = cluster.status()["last_checkpoint"]
    at_kill = out.count()
    for i in (0, 1):
        w = cluster.current(i)
        assert w.proc is not None
        w.proc.kill()  # SIGKILL the commands only: their guards end the actor groups
    for i in (0, 1):
        w = cluster.current(i)
        w.proc.wait(10)
        wait_until(lambda w=w: not group_alive(w.pgid), 15, f"{w.log_path}'s actors to end")
    assert at_kill < n and all(s.is_alive() for s in senders), "the kill came after the stream"
    # The same commands again, joiner first.
    for w in [cluster.start_worker(1), cluster.start_worker(0)]:
        w.wait_ready(60)
    results = [s.finish(120) for s in senders]
    assert [r["acked"] for r in results] == [len(first), len(second)]
    assert all(r["reconnects"] >= 1 for r in results), results
    want = running_totals(votes_of(first) + votes_of(second))
    wait_until(lambda: dedupe_per_key(out.lines()) == want, 30, "every running total")
    assert latest_per_key(out.lines()) == {k: v[-1] for k, v in want.items()}
    status = cluster.status()
    assert status["epoch"] > epoch and status["state"] == "running"
    assert status["last_checkpoint"] > checkpoint  # new checkpoints after the restart
    log = cluster.current(0).log()
    resumed = re.search(r"resuming cluster \S+ from checkpoint (\d+)", log)
    assert resumed and int(resumed[1]) >= checkpoint, "the cluster did not resume from its files"


# --------------------------------------------------------------------------
# A receiver away


SINK_BUFFER = 8192
BATCH = 100  # --batch-size, and the sender's batch


def test_receiver_away_longer_than_the_sink_buffer(lab):
    # README "Batches and back-pressure": "A slow or absent receiver slows the sinks, then
    # every stage, then the sources stop reading and the senders block: every buffer is
    # bounded, nothing is dropped"; "Sinks reconnect with back-off when the receiver ...
    # goes away, and keep up to --sink-buffer bytes meanwhile"; "Checkpoints": "the
    # checkpoint is complete (so checkpoints wait while a receiver is away)".
    out = lab.receiver()
    cluster = lab.cluster(
        str(TEST_APPS / "padded_votes.py"),
        1,
        [out.port],
        extra=(
            "--sink-buffer",
            str(SINK_BUFFER),
            "--batch-size",
            str(BATCH),
            "--time-between-checkpoints",
            "0.2",
        ),
    ).start()
    rng = random.Random(7)
    # 1 KB frames: the sender's and the source's socket buffers (a few MB) hold a few
    # thousand of them, far fewer than the stream.
    frames = [vote_frame(rng.choice("abcdefgh"), rng.randrange(1, 11), 1000) for _ in range(24_000)]
    first, second = 2_000, 2_000 + BATCH  # the sender's pauses
    sender = lab.sender(
        cluster.port("in"), frames, stream="padded", batch_size=BATCH, pauses=(first, second)
    )

    def source_in(status: dict) -> int:
        return sum(v["records_in"] for k, v in status["actors"].items() if k.startswith("source"))

    def sink(status: dict) -> dict:
        (s,) = [v for k, v in status["actors"].items() if k.startswith("sink")]
        return s

    # Phase one flows while the receiver is there; checkpoints complete.
    assert sender.wait_paused(60), "the sender never got to its first pause"
    assert out.wait_count(first, 60), f"{out.count()} of {first} outputs before the leave"
    wait_until(lambda: cluster.status()["last_checkpoint"] >= 1, 30, "a first checkpoint")
    # The receiver leaves (having read every output so far: nothing in flight to it is
    # lost with it), and the stream goes on: one batch, whose outputs fit the sink buffer.
    out.leave()
    assert cluster.current(0).wait_log(rf"sink: lost 127\.0\.0\.1:{out.port}", 30)
    sender.resume()
    assert sender.wait_paused(60), "the sender never got to its second pause"
    wait_until(lambda: sink(cluster.status())["records_in"] == second, 30, "the batch at the sink")
    status = cluster.status()
    checkpoint, barriers = status["last_checkpoint"], sink(status)["checkpoints"]
    held = sink(status)
    assert not held["connected"] and 0 < held["bytes_held"] <= SINK_BUFFER, held
    # Barriers still reach the sink, but no checkpoint completes: the sink has not
    # written what came before them.
    seen = []
    for _ in range(8):  # 8 x 0.2 s: several checkpoint intervals
        time.sleep(0.2)
        seen.append(cluster.status()["last_checkpoint"])
    # (one completion may race the reading above: its barrier passed the sink before
    # the batch did)
    assert seen[0] <= checkpoint + 1 and len(set(seen)) == 1, (checkpoint, seen)
    checkpoint = seen[0]
    # (a checkpoint starts when the one before completes: one barrier waits at the sink)
    assert sink(cluster.status())["checkpoints"] > barriers, "no barrier reached the sink"
    # The rest of the stream: the sink buffer overflows, the pipeline stands still, the
    # source stops reading, the sender blocks.
    sender.resume()
    readings: list[int] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        status = cluster.status()
        readings.append(source_in(status))
        if len(readings) >= 4 and len(set(readings[-4:])) == 1 and readings[-1] > second:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the pipeline never stood still: source records_in {readings[-8:]}")
    stalled_in = readings[-1]
    assert stalled_in < len(frames), "the source read the whole stream with no receiver"
    sender_pos = sender.pos
    assert sender_pos < len(frames) and sender.is_alive(), "the sender was not blocked"
    assert not sink(status)["connected"] and sink(status)["bytes_held"] > SINK_BUFFER // 2
    for _ in range(8):
        time.sleep(0.2)
        status = cluster.status()
        assert status["last_checkpoint"] == checkpoint, "a checkpoint completed while away"
        assert source_in(status) == stalled_in, "the source went on reading"
        assert sender.pos == sender_pos, "the sender went on sending"
        # bounded: the sink buffer plus the window of batches (4 + 1, of 100 outputs of
        # under 20 bytes) that may arrive after it filled
        assert sink(status)["bytes_held"] <= SINK_BUFFER + 5 * BATCH * 20, sink(status)
    assert out.count() == first
    # The receiver comes back: everything arrives, in order per key; checkpoints resume.
    out.come_back()
    result = sender.finish(120)
    assert result["acked"] == len(frames)
    assert out.wait_count(len(frames), 60), f"{out.count()} of {len(frames)} outputs"
    lines = out.lines()
    assert len(lines) == len(frames)
    assert per_key(lines) == running_totals(votes_of(frames))
    status = cluster.status()
    assert status["last_checkpoint"] > checkpoint
    assert sink(status)["connects"] >= 2
