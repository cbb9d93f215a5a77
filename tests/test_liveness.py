"""The topology actor's liveness logic, driven in process with a fake send and a fake
clock: heartbeats, fencing a silent worker, and taking it back when it answers."""

from __future__ import annotations

import pytest

from actorflow.messages import (
    BuildCluster,
    Fenced,
    Heartbeat,
    HeartbeatAck,
    JoinCluster,
    Liveness,
    OwnerUnreachable,
    Retire,
    WorkerInfo,
)
from actorflow.plan import Settings
from actorflow.runtime import topology
from actorflow.runtime.membership import LOST_AFTER, LOST_HEARTBEAT_EVERY
from actorflow.runtime.topology import Phase, TopologyActor


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class FakeTopology(TopologyActor):
    """The real actor, with its sends and timers recorded instead of transmitted."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[object, object]] = []
        self.timers: list[object] = []

    def send(self, target, msg):  # noqa: D102
        self.sent.append((target, msg))

    def wakeupAfter(self, period, payload=None):  # noqa: N802, D102
        self.timers.append(payload)

    def take(self, kind: type) -> list[tuple[object, object]]:
        got = [(t, m) for t, m in self.sent if isinstance(m, kind)]
        self.sent = [(t, m) for t, m in self.sent if not isinstance(m, kind)]
        return got


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(topology.time, "monotonic", c.monotonic)
    return c


@pytest.fixture
def running(clock) -> FakeTopology:
    """A two-worker cluster that is running at epoch 1."""
    t = FakeTopology()
    w1 = WorkerInfo("worker1", "uid1", (), "127.0.0.1:1", guard="guard1")
    w2 = WorkerInfo("worker2", "uid2", (), "127.0.0.1:2", guard="guard2")
    t.request = BuildCluster("app.py", w1, 2, Settings(checkpoint_every=0), None)
    m = t.membership
    m.initializer = "worker1"
    m.members = {"worker1": w1, "worker2": w2}
    m.registered = {"uid1": "worker1", "uid2": "worker2"}
    m.order = ["worker1", "worker2"]
    m.answered = {"worker1": clock.now, "worker2": clock.now}
    t.addresses = {("router1", "worker1"): "router1@1", ("state2", "worker2"): "state2@2"}
    t.state, t.ever_ready, t.epoch = Phase.RUNNING, True, 1
    return t


def test_heartbeats_go_to_every_other_worker_and_answers_keep_it(running, clock):
    running.heartbeat()
    assert running.take(Heartbeat) == [("guard2", Heartbeat(1))]
    for _ in range(10):
        clock.now += 0.5
        running.on_heartbeat_ack(HeartbeatAck(1, "worker2", "uid2"))
        running.heartbeat()
    assert running.state == "running" and not running.membership.lost
    liveness = [m for _, m in running.take(Liveness)]
    assert liveness and all(m.lost == () for m in liveness)


def test_a_silent_worker_is_fenced_and_the_others_are_told(running, clock):
    clock.now += LOST_AFTER + 0.1
    running.heartbeat()
    assert running.membership.lost == {"worker2"}
    assert running.state == "recovering"
    running.heartbeat()  # the second tick broadcasts
    told = running.take(Liveness)
    assert told and {t for t, _ in told} == {"router1@1"}, "not to the lost worker's actors"
    assert all(m.lost == ("worker2",) for _, m in told)


def test_a_lost_worker_is_asked_seldom(running, clock):
    clock.now += LOST_AFTER + 0.1
    running.heartbeat()
    running.take(Heartbeat)
    asked = 0
    for _ in range(8):  # 4 s of ticks
        clock.now += 0.5
        running.heartbeat()
        asked += len(running.take(Heartbeat))
    assert asked <= 4 / LOST_HEARTBEAT_EVERY + 1


def test_a_fenced_worker_that_answers_again_is_retired_and_placed_anew(running, clock):
    clock.now += LOST_AFTER + 0.1
    running.heartbeat()
    running.sent.clear()
    clock.now += 20  # stopped for a while, then SIGCONT
    running.on_heartbeat_ack(HeartbeatAck(7, "worker2", "uid2"))
    assert not running.membership.lost
    assert running.take(Fenced) and running.take(Fenced) == []
    retired = {t for t, m in running.take(Retire)}
    assert retired == {"router1@1", "state2@2"}, "its old actors are retired too"
    assert running.epoch == 2 and running.state == "retiring"


def test_an_answer_from_a_replaced_incarnation_is_ignored(running, clock):
    clock.now += LOST_AFTER + 0.1
    running.heartbeat()
    running.on_heartbeat_ack(HeartbeatAck(1, "worker2", "an-old-uid"))
    assert running.membership.lost == {"worker2"} and running.state == "recovering"


def test_a_drop_for_a_worker_that_answers_rolls_back(running, clock):
    running.on_owner_unreachable(OwnerUnreachable("worker2", "router1", "worker1"))
    assert running.state != "running", "records were dropped for a live worker"


def test_a_drop_for_a_silent_worker_waits_for_the_heartbeats(running, clock):
    clock.now += 2.0
    running.on_owner_unreachable(OwnerUnreachable("worker2", "router1", "worker1"))
    assert running.state == "running"


def test_a_restarted_worker_is_not_taken_for_lost_at_once(running, clock):
    clock.now += LOST_AFTER - 0.5  # it crashed and came back before it was found lost
    running.cluster_id = "c"
    again = WorkerInfo("worker2", "uid2b", (), "127.0.0.1:2", cluster_id="c", guard="guard2b")
    running.membership.registered["uid2b"] = "worker2"
    running.on_join(JoinCluster(again, 2), "its command")
    assert running.membership.members["worker2"].uid == "uid2b" and running.epoch == 2
    clock.now += 1.0
    running.heartbeat()
    assert "worker2" not in running.membership.lost
    assert ("guard2b", Heartbeat(running.heartbeats)) in running.sent


def test_the_docstring_examples_run():
    import doctest

    from actorflow import net, security
    from actorflow.runtime import stage

    for module in (stage, security, net):
        failed, tried = doctest.testmod(module)
        assert tried and not failed, module.__name__
