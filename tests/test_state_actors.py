"""Parallel state actors inside a worker (``--state-actors K``): each partitioned state
step runs K actors per worker, each holding its share of the worker's partitions, so
one step can use K cores of a worker. The plan, the router's partition targets and
the barrier fan-in in process; then real clusters through a crash, a restore and a
grow, with exact totals and one output per vote."""

from __future__ import annotations

import glob
import os
import zlib
from collections import Counter
from pathlib import Path

import pytest

from actorflow.control import query_status
from actorflow.loader import load_application
from actorflow.partitioning import holders
from actorflow.plan import compile_plan, fan_in, place, wire
from actorflow.tools.gen import alphabet_frames, alphabet_totals
from tests.test_rescale import sequence_frames, wait_sequences, wait_status
from tests.test_resilience import ALPHABET, runs  # noqa: F401  (the fixture)

APP_ARGS = ("--in", "alphabet@127.0.0.1:7000", "--out", "127.0.0.1:7002")


def planned(lanes: int, workers: list[str], partitions: int = 12):
    app = load_application(ALPHABET, APP_ARGS)
    plan = compile_plan(app, lanes)
    placement = place(plan, app, workers, partitions=partitions)
    addresses = {(p.id, p.worker): f"{p.id}@{p.worker}" for p in placement.placed}
    return plan, placement, wire(plan, placement, addresses), fan_in(plan, placement)


def test_each_partition_is_held_by_one_lane_of_its_owner():
    plan, placement, routes, inputs = planned(3, ["w1", "w2"], partitions=12)
    states = [p for p in placement.placed if p.stage.kind == "state"]
    assert sorted((p.stage.id, p.worker) for p in states) == [
        (s, w) for s in ("state2", "state2~1", "state2~2") for w in ("w1", "w2")
    ]
    held = Counter(part for p in states for part in p.partitions)
    assert sorted(held) == list(range(12)) and set(held.values()) == {1}
    table = placement.owners["state2"]  # one owner table for the step, by worker
    for p in states:
        assert {table[part] for part in p.partitions} == {p.worker}
        assert len(p.partitions) == 2  # 6 partitions per worker, dealt over 3 lanes
    # Every router sends each partition to the lane that holds it.
    where = {part: f"{p.stage.id}@{p.worker}" for p in states for part in p.partitions}
    for w in ("w1", "w2"):
        (route,) = routes[("router1", w)]
        assert route.kind == "partitioned"
        assert list(route.targets) == [where[i] for i in range(12)]
        assert list(route.workers) == list(table)
    # Barriers: each lane hears from both routers; each sink from its worker's 3 lanes.
    assert all(inputs[(p.stage.id, p.worker)] == 2 for p in states)
    assert inputs[("sink3.0", "w1")] == inputs[("sink3.0", "w2")] == 3


def test_a_lane_without_partitions_is_not_placed():
    _, placement, routes, inputs = planned(4, ["w1", "w2", "w3"], partitions=6)
    states = [p for p in placement.placed if p.stage.kind == "state"]
    assert all(len(p.partitions) == 1 for p in states)  # 2 per worker: lanes 0 and 1 only
    assert len(states) == 6
    (route,) = routes[("router1", "w1")]
    assert len(set(route.targets)) == 6
    assert inputs[("sink3.0", "w2")] == 2


def test_one_lane_is_the_plan_as_before():
    plan, placement, routes, _ = planned(1, ["w1", "w2"])
    assert [s.id for s in plan.stages if s.kind == "state"] == ["state2"]
    (route,) = routes[("router1", "w1")]
    assert list(route.targets) == [f"state2@{w}" for w in placement.owners["state2"]]


def test_holders_deal_each_workers_partitions_in_turn():
    table = ("a",) * 5 + ("b",) * 3
    held = holders(table, 2)
    assert [held[p] for p in range(8)] == [
        ("a", 0), ("a", 1), ("a", 0), ("a", 1), ("a", 0), ("b", 0), ("b", 1), ("b", 0)
    ]  # fmt: skip


def lanes_of(status: dict) -> dict[str, list[int]]:
    """Per worker, the partition count of each of its state actors."""
    return {
        w: sorted(a["partitions"] for a in group if a["kind"] == "state")
        for w, group in status["workers"].items()
    }


@pytest.mark.integration
def test_a_crash_and_restart_with_two_state_actors_per_worker_is_exact(runs):  # noqa: F811
    run = runs(2, extra=["--state-actors", "2"])
    run.cluster.start()
    status = query_status(("127.0.0.1", run.cluster.control))
    assert lanes_of(status) == {"worker1": [30, 30], "worker2": [30, 30]}
    frames = alphabet_frames(60_000, seed=11)
    run.send_acked(frames)
    run.wait_outputs(10_000)
    run.kill(1)  # worker2: its two state actors restore from their own snapshots
    run.restart(1)
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want


@pytest.mark.integration
def test_a_grow_with_three_state_actors_per_worker_is_exact(runs):  # noqa: F811
    """From 1 worker (3 lanes of 40 partitions) to 2 (6 lanes of 20): the partitions
    dealt anew, each lane loads its share from whichever lane held it at the cut."""
    run = runs(1, extra=["--state-actors", "3"])
    run.cluster.start()
    frames = alphabet_frames(60_000, seed=12)
    run.send_acked(frames)
    run.wait_outputs(10_000)
    joiner = run.cluster.grow()
    joiner.wait_ready(60)
    status = wait_status(run, lambda s: s["worker_count"] == 2 and s["rescale"] is None)
    assert status["last_rescale"]["outcome"] == "done", status["last_rescale"]
    assert lanes_of(status) == {"worker1": [20, 20, 20], "worker2": [20, 20, 20]}
    summary = run.finish()
    assert summary["acked"] == len(frames) and summary["reconnects"] == 0, summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want
    assert len(run.out.lines()) == len(frames)  # nothing processed twice


@pytest.mark.integration
def test_a_lane_left_without_partitions_by_a_grow_leaves_no_files(runs):  # noqa: F811
    """4 partitions over 3 lanes on one worker (2, 1, 1); after a grow each worker has 2,
    so worker1's third lane is not placed any more: its snapshots go with the next
    checkpoints, and the totals stay exact."""
    run = runs(1, extra=["--state-actors", "3", "--partitions", "4"])
    run.cluster.start()
    control = ("127.0.0.1", run.cluster.control)
    assert lanes_of(query_status(control)) == {"worker1": [1, 1, 2]}
    third = os.path.join(run.cluster.resilience_dir(0), "*.state*_2.cp*.state")
    frames = alphabet_frames(30_000, seed=13)
    run.send_acked(frames)
    run.wait_outputs(5_000)
    wait_status(run, lambda s: s["last_checkpoint"] >= 2)
    assert glob.glob(third), os.listdir(run.cluster.resilience_dir(0))  # it has a snapshot
    run.cluster.grow().wait_ready(60)
    status = wait_status(run, lambda s: s["worker_count"] == 2 and s["rescale"] is None)
    assert lanes_of(status) == {"worker1": [1, 1], "worker2": [1, 1]}
    after = status["last_checkpoint"]
    wait_status(run, lambda s: s["last_checkpoint"] > after + 1)
    assert glob.glob(third) == []
    summary = run.finish()
    assert summary["acked"] == len(frames), summary
    want = alphabet_totals(frames)
    assert run.wait_totals(want) == want


@pytest.mark.integration
def test_a_restart_with_another_state_actor_count_is_refused(runs):  # noqa: F811
    run = runs(1, extra=["--state-actors", "2"])
    run.cluster.start()
    run.cluster.stop()
    again = run.cluster.start_worker(0, "--state-actors", "3")
    assert again.proc.wait(60) != 0
    assert "--state-actors 2" in again.log(), again.log()


PARALLEL_LAST_FOUR = str(Path(__file__).parent / "apps" / "parallel_last_four.py")


def test_a_parallel_source_feeds_each_lane_of_its_router():
    """``TCPSourceConfig(parallelism=3)``: three router actors per worker; the source's
    one route reaches them all, and each state actor hears from all of them."""
    app = load_application(PARALLEL_LAST_FOUR, (*APP_ARGS, "--source-parallelism", "3"))
    plan = compile_plan(app, 2)
    routers = [s.id for s in plan.stages if s.kind == "router"]
    assert routers == ["router1", "router1~1", "router1~2"]
    placement = place(plan, app, ["w1", "w2"], partitions=8)
    addresses = {(p.id, p.worker): f"{p.id}@{p.worker}" for p in placement.placed}
    routes = wire(plan, placement, addresses)
    (route,) = routes[("source0", "w1")]
    assert route.kind == "lanes"
    assert route.targets == ("router1@w1", "router1~1@w1", "router1~2@w1")
    inputs = fan_in(plan, placement)
    assert inputs[("state2~1", "w2")] == 6  # 3 routers on each of 2 workers
    assert inputs[("sink3.0", "w1")] == 2  # the worker's 2 state actors


@pytest.mark.integration
def test_connections_of_a_parallel_source_use_its_lanes_and_keep_key_order(runs):  # noqa: F811
    """Two acknowledged streams, disjoint keys, into worker1's source with parallelism
    2 (each through the router actor its name picks), 2 state actors per worker, worker2
    SIGKILLed and restarted: every key's outputs are its last four values, in order."""
    run = runs(
        2, app=PARALLEL_LAST_FOUR, extra=["--state-actors", "2", "--source-parallelism", "2"]
    )
    run.cluster.start()
    keys, rounds = 100, 300
    frames = sequence_frames(keys, rounds)
    mine = {s: [f for f in frames if (int(f[5:].split(b":")[0]) % 2) == s] for s in (0, 1)}
    # An acknowledged stream's lane follows its name (it keeps it when it reconnects):
    # two names on different lanes.
    names = (f"votes-{i}" for i in range(100))
    first = next(names)
    second = next(n for n in names if zlib.crc32(n.encode()) % 2 != zlib.crc32(first.encode()) % 2)
    streams = (first, second)

    senders = [
        run.cluster.send_acked(
            0, mine[s], streams[s], batch_size=250, interval_ms=8, patience=90, log=None
        )
        for s in (0, 1)
    ]
    run.wait_outputs(5_000)
    assert any(s.alive() for s in senders), "both senders finished before the kill"
    run.kill(1, mid_stream=False)
    run.restart(1)
    results = {s: senders[s].finish(120) for s in (0, 1)}
    assert [results[s]["acked"] for s in (0, 1)] == [len(mine[0]), len(mine[1])], results
    wait_sequences(run, keys, rounds)
    status = query_status(("127.0.0.1", run.cluster.control))
    routed = {k: a["records_in"] for k, a in status["actors"].items() if k.startswith("router")}
    assert all(routed[f"{r}@worker1"] > 0 for r in ("router1", "router1~1")), routed


def test_the_in_process_runner_takes_a_parallel_source_once():
    from actorflow import testing

    records = [("k1", 1), ("k2", 1), ("k1", 2), ("k1", 3)]
    out = testing.run(PARALLEL_LAST_FOUR, records, args=(*APP_ARGS, "--source-parallelism", "2"))
    (lines,) = out.values()
    assert [x[1] for x in lines] == [(1,), (1,), (1, 2), (1, 2, 3)]
