"""Live grow and shrink on real worker processes: a running cluster takes a worker
started with --join, and hands partitions back with ``actorflow shrink``; partitions
move with their state at a checkpoint, an acknowledged sender keeps sending through
it, and the final per-key totals are exact."""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from actorflow.control import query_status, shrink_cluster
from actorflow.tools.gen import alphabet_frames, alphabet_totals
from tests.test_resilience import runs  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration


def wait_status(run, check, timeout: float = 60.0) -> dict:
    """The cluster's status once ``check(status)`` holds."""
    deadline = time.monotonic() + timeout
    status: dict = {}
    while time.monotonic() < deadline:
        try:
            status = query_status(("127.0.0.1", run.cluster.control), 5)
        except Exception:  # a moment without an answer: ask again
            status = {}
        if status and check(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"the cluster never got there; last status: {status}")


def test_grow_one_to_two_to_three_keeps_totals_exact(runs):  # noqa: F811
    run = runs(1)
    run.cluster.start()
    frames = alphabet_frames(120_000, seed=5)
    run.send_acked(frames)
    for size in (2, 3):
        run.wait_outputs(len(run.out.lines()) + 5_000)
        joiner = run.cluster.grow()
        joiner.wait_ready(60)
        status = wait_status(
            run, lambda s, n=size: s["worker_count"] == n and s["rescale"] is None
        )
        last = status["last_rescale"]
        assert last["kind"] == "grow" and last["outcome"] == "done", last
        assert last["workers_after"][-1] == run.cluster.names[-1]
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    # The sender's connection stays open through both grows (its source is kept), and
    # nothing is processed twice: one output per vote.
    assert summary["reconnects"] == 0, summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want
    assert len(run.out.lines()) == len(frames)
    status = query_status(("127.0.0.1", run.cluster.control))
    owned = {
        w: sum(a.get("partitions", 0) for a in group if a["kind"] == "state")
        for w, group in status["workers"].items()
    }
    assert sorted(owned.values()) == [40, 40, 40], owned
    assert status["table_version"] == 2


def test_shrink_three_to_two(runs):  # noqa: F811
    """worker3 leaves while two acknowledged senders send, one of them to worker3's own
    source: that stream is told where to go on, and the totals come out exact."""
    run = runs(3)
    run.cluster.start()
    frames = alphabet_frames(100_000, seed=9)
    moving = alphabet_frames(40_000, seed=10)
    run.send_acked(frames)
    notes: list[str] = []
    second = run.cluster.send_acked(
        2, moving, "moving", batch_size=250, interval_ms=8, patience=90, log=notes.append
    )
    run.wait_outputs(8_000)
    leaver = run.current(2)
    done = shrink_cluster(("127.0.0.1", run.cluster.control), ("worker3",), timeout=60)
    assert done.left == ("worker3",) and done.workers == ("worker1", "worker2")
    assert leaver.proc.wait(30) == 0, leaver.log()
    assert not os.listdir(run.cluster.resilience_dir(2)), "the leaver removes its files"
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    second.thread.join(120)
    moved = second.result
    assert moved.get("acked") == len(moving), (moved, second.error, notes)
    heir = f"127.0.0.1:{run.cluster.inputs[0]}"
    assert any(f"moves from 127.0.0.1:{run.cluster.inputs[2]} to {heir}" in n for n in notes), notes
    want = alphabet_totals(frames + moving)
    assert run.wait_totals(want) == want
    status = query_status(("127.0.0.1", run.cluster.control))
    assert status["worker_names"] == ["worker1", "worker2"]
    assert status["last_rescale"]["partitions_moved"] == 40


LAST_FOUR = str(Path(__file__).parent / "apps" / "last_four.py")


def sequence_frames(keys: int, rounds: int) -> list[bytes]:
    """Each key's values 1 .. rounds, the keys interleaved (framed)."""
    payloads = [f"k{k}:{n}".encode() for n in range(1, rounds + 1) for k in range(keys)]
    return [struct.pack(">I", len(p)) + p for p in payloads]


def check_sequences(lines: list[str], keys: int, rounds: int) -> None:
    """Every output is its key's last four values, contiguous; every key reached the end."""
    last: dict[str, int] = {}
    for line in lines:
        key, _, values = line.rstrip("\n").partition(":")
        got = [int(v) for v in values.split(",")]
        n = got[-1]
        assert got == list(range(max(1, n - 3), n + 1)), f"{key}: {got}"
        last[key] = max(last.get(key, 0), n)
    assert last == {f"k{k}": rounds for k in range(keys)}


def wait_sequences(run, keys: int, rounds: int, timeout: float = 30) -> None:
    """Wait until every key's sequence is complete; fail on the first broken output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            check_sequences(run.out.lines(), keys, rounds)
            return
        except AssertionError:
            time.sleep(0.2)
    check_sequences(run.out.lines(), keys, rounds)


def test_sequences_stay_whole_through_grow_shrink_and_a_restart(runs):  # noqa: F811
    run = runs(1, app=LAST_FOUR)
    run.cluster.start()
    keys, rounds = 300, 700
    frames = sequence_frames(keys, rounds)
    run.send_acked(frames)
    control = ("127.0.0.1", run.cluster.control)
    for size in (2, 3):
        run.wait_outputs(len(run.out.lines()) + 5_000)
        assert run.sending(), "the sender finished before the grow"
        run.cluster.grow().wait_ready(60)
        wait_status(run, lambda s, n=size: s["worker_count"] == n and s["rescale"] is None)
    run.wait_outputs(len(run.out.lines()) + 5_000)
    assert run.sending(), "the sender finished before the shrink"
    done = shrink_cluster(control, count=1, timeout=60)
    assert done.left == ("worker3",), done
    # A restart after the shrink: the initializer's command still says --worker-count 1,
    # its files say 2.
    run.wait_outputs(len(run.out.lines()) + 3_000)
    run.kill(0)
    run.restart(0)
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    wait_sequences(run, keys, rounds)
    status = query_status(control)
    assert status["worker_names"] == ["worker1", "worker2"] and status["state"] == "running"
    assert status["table_version"] == 3


@pytest.mark.parametrize("victim", ["joiner", "member"])
def test_a_worker_killed_during_a_grow(victim, runs):  # noqa: F811
    """Killed while the partitions move: the joiner's loss puts the old layout back,
    a member's is recovered into the new one; sequences stay whole either way."""
    run = runs(2, app=LAST_FOUR)
    run.cluster.start()
    keys, rounds = 200, 300
    frames = sequence_frames(keys, rounds)
    run.send_acked(frames)
    run.wait_outputs(5_000)
    # The joiner's source port is taken for a while (its source waits up to 5 s for
    # it): the move is under way for that long.
    busy = socket.create_server(("127.0.0.1", 0))
    joiner = run.cluster.grow(in_port=busy.getsockname()[1])
    try:
        moving = wait_status(run, lambda s: (s.get("rescale") or {}).get("step") == "move")
        assert moving["state"] in ("configuring", "retiring", "starting"), moving["state"]
        if victim == "member":
            run.kill(1)
        else:
            # Its guard ends its actors a moment later; the port stays taken until the
            # cluster has noticed the loss.
            joiner.proc.kill()
            status = wait_status(run, lambda s: s["last_rescale"] is not None, timeout=60)
    finally:
        busy.close()
    if victim == "joiner":
        assert status["last_rescale"]["outcome"].startswith("abandoned"), status["last_rescale"]
        status = wait_status(run, lambda s: s["state"] == "running")
        assert status["worker_names"] == ["worker1", "worker2"]
    else:
        run.restart(1)
        joiner.wait_ready(60)
        status = wait_status(run, lambda s: s["rescale"] is None and s["state"] == "running")
        assert status["worker_names"] == ["worker1", "worker2", "worker3"]
        assert status["last_rescale"]["outcome"] == "done"
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    wait_sequences(run, keys, rounds)


def test_a_leaving_worker_killed_during_the_shrink(runs):  # noqa: F811
    """SIGKILLed right after the shrink is asked, then restarted: the shrink completes
    (reading the leaver's snapshots from its files once it is back, if it still needs
    them), and sequences stay whole."""
    run = runs(3, app=LAST_FOUR)
    run.cluster.start()
    keys, rounds = 200, 300
    frames = sequence_frames(keys, rounds)
    run.send_acked(frames)
    run.wait_outputs(5_000)
    control = ("127.0.0.1", run.cluster.control)
    done: dict = {}
    asking = threading.Thread(
        target=lambda: done.update(r=shrink_cluster(control, ("worker3",), timeout=120)),
        daemon=True,
    )
    asking.start()
    # Under way, or (a quick shrink) done already: then the restart below is one of a
    # worker that left.
    wait_status(run, lambda s: s.get("rescale") is not None or s["last_rescale"] is not None)
    run.kill(2)
    back = run.cluster.start_worker(2)  # ready only if the shrink still needs it
    asking.join(120)
    assert done["r"].left == ("worker3",), done
    # Back in time, it hands its partitions over and leaves; back after the shrink, it
    # is told it left: either way it removes its files and exits 0. (If its guard outlived
    # it long enough to take the order to leave, the files are gone already, and the
    # restart is refused as a worker that left.)
    code = back.proc.wait(30)
    assert code == 0 or (code == 1 and "left this cluster" in back.log()), back.log()
    assert not os.listdir(run.cluster.resilience_dir(2)), "the leaver removes its files"
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    wait_sequences(run, keys, rounds)
    assert wait_status(run, lambda s: s["state"] == "running")["worker_names"] == [
        "worker1",
        "worker2",
    ]
