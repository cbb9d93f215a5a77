"""Outlets: immediate sends on an idle link, larger batches on a busy one, and a bound
on what is in flight, in records and in time (no cluster, no timers)."""

from __future__ import annotations

import random
from collections import deque
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from thespian.actors import WakeupMessage

from actorflow.messages import Ack, Barrier, Batch, EncodedBatch
from actorflow.runtime import outlets
from actorflow.runtime.outlets import Outlet
from actorflow.runtime.sink import SinkActor
from actorflow.runtime.stage import StageActor


def make(window: int = 4, batch_size: int = 10) -> tuple[Outlet, list[Any]]:
    sent: list[Any] = []
    o = Outlet(lambda _target, msg: sent.append(msg), "t", 1, window, batch_size, False)
    return o, sent


def records(start: int, n: int) -> list[tuple[str, int]]:
    return [("k", i) for i in range(start, start + n)]


def test_an_idle_link_sends_a_partial_batch_at_once() -> None:
    o, sent = make()
    o.buf.extend(records(0, 3))
    o.pump()
    assert [len(b.records) for b in sent] == [3]  # no timer, no waiting for more


def test_a_busy_link_waits_for_a_full_batch_or_an_ack() -> None:
    o, sent = make()
    o.buf.extend(records(0, 3))
    o.pump()
    o.buf.extend(records(3, 5))
    o.pump()
    assert len(sent) == 1  # 5 < a batch, one in flight: wait
    o.acked()  # idle again: what there is goes at once
    assert [b.records for b in sent[1:]] == [records(3, 5)]


def test_a_busy_link_cuts_larger_batches_within_the_records_budget(monkeypatch) -> None:
    monkeypatch.setattr(outlets, "LINK_SECONDS", 0.0)  # the budget in records only
    monkeypatch.setattr(outlets, "BUSY_BATCH_FACTOR", 4)
    o, sent = make(window=4, batch_size=10)
    o.buf.extend(records(0, 10))
    o.pump()  # idle: one batch
    o.buf.extend(records(10, 70))
    o.pump()  # busy: one larger batch, up to window * batch_size in flight
    assert [len(b.records) for b in sent] == [10, 30]
    assert o.in_flight_records == 40 and len(o.buf) == 40
    o.acked()  # 10 acknowledged: room for one batch
    assert [len(b.records) for b in sent] == [10, 30, 10]
    o.acked()  # 30 acknowledged: a larger one again
    assert [len(b.records) for b in sent] == [10, 30, 10, 30]
    assert [r for b in sent for r in b.records] == records(0, 80)


def test_the_budget_follows_the_acknowledged_rate(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(outlets.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(outlets, "LINK_SECONDS", 0.025)
    o, sent = make(window=8, batch_size=10)  # at most 80 in flight, never under 20
    assert (o.min_budget, o.max_budget) == (20, 80)
    for i in range(30):  # the target takes 10 records every 10 ms: 1000 records/s
        o.buf.extend(records(10 * i, 10))
        o.pump()
        clock[0] += 0.01
        o.acked()
    assert o.rate == pytest.approx(1000, rel=0.01)
    assert o.budget == 25  # 25 ms of records
    for _ in range(30):  # now 10 records every ms: 10000 records/s, 250 in 25 ms
        o.buf.extend(records(0, 10))
        o.pump()
        clock[0] += 0.001
        o.acked()
    assert o.budget == 80  # capped at window * batch_size
    for _ in range(40):  # and slow again: the floor of two batches
        o.buf.extend(records(0, 10))
        o.pump()
        clock[0] += 0.1
        o.acked()
    assert o.budget == 20


@pytest.mark.parametrize("seed", range(5))
def test_every_record_goes_once_in_order_within_the_bounds(seed: int) -> None:
    rnd = random.Random(seed)
    o, sent = make(window=rnd.randint(1, 6), batch_size=rnd.randint(1, 50))
    emitted = 0
    most = 0
    checkpoints = 0
    for _ in range(2000):
        roll = rnd.random()
        if roll < 0.5:
            n = rnd.randint(0, 120)
            o.buf.extend(records(emitted, n))
            emitted += n
            o.pump()
        elif roll < 0.95 and o.in_flight:
            o.acked()
        elif roll >= 0.95:
            checkpoints += 1
            o.barrier(checkpoints)
        most = max(most, o.in_flight_records)
        assert o.in_flight <= o.window
        batches = [m for m in sent if m.__class__ is Batch]
        assert all(len(b.records) <= o.busy_cut for b in batches)
    while o.in_flight or o.buf or o.sealed:
        o.acked()
    assert most <= o.max_budget
    got = [r for m in sent if m.__class__ is Batch for r in m.records]
    assert got == records(0, emitted)
    assert [m.seq for m in sent] == list(range(1, len(sent) + 1))
    assert sum(m.__class__ is Barrier for m in sent) == checkpoints


def test_encoded_route_skips_and_reports_what_does_not_encode_to_bytes() -> None:
    from actorflow.runtime.outlets import EncodedRoute
    from actorflow.runtime.steps import ErrorLog

    calls: list[Any] = []

    def encode(value: Any) -> Any:
        calls.append(value)
        if value == "boom":
            raise ValueError("cannot encode")
        if value == "text":
            return "not bytes"
        if value == "array":
            return bytearray(b"A")
        return str(value).encode()

    o, _ = make()
    errors = ErrorLog("encoder", 20)
    route = EncodedRoute(o, encode, errors)
    values = [1, "boom", 2, "text", "array", 3, "boom", "boom", 4]
    route.emit([("k", v) for v in values])
    assert o.buf == [b"1", b"2", b"A", b"3", b"4"]
    assert all(type(b) is bytes for b in o.buf)
    assert errors.count == 4  # three that raised, one that gave a str
    assert calls == values  # each value encoded exactly once
    o.buf.clear()
    route.emit([("k", v, 123) for v in (5, 6)])  # records with event times too
    assert o.buf == [b"5", b"6"]


def test_acknowledgements_are_cumulative_and_an_older_one_frees_nothing() -> None:
    o, sent = make(window=4, batch_size=10)
    for start in range(0, 40, 10):
        o.buf.extend(records(start, 10))
        o.pump()
    assert o.in_flight == 4 and [m.seq for m in sent] == [1, 2, 3, 4]
    o.buf.extend(records(40, 10))
    o.acked(3)  # batches 1-3 at once
    assert o.in_flight == 2 and [m.seq for m in sent][-1] == 5
    o.acked(2)  # overtaken by the acknowledgement of 3: nothing more is free
    assert o.in_flight == 2 and o.in_flight_records == 20


class _HeldStage(StageActor):
    """A stage whose acknowledgements wait (as a sink's do over its buffer limit)."""

    holding = True

    def holding_acks(self) -> bool:
        return self.holding


def test_a_barrier_acknowledgement_waits_while_acknowledgements_are_held() -> None:
    # The barrier's acknowledgement also acknowledges the batches before it: sent while
    # a sink holds theirs, it would let a whole window more into the sink's buffer.
    stage = _HeldStage()
    stage.epoch = 1
    stage.config = SimpleNamespace(inputs=1, coordinator=None)  # type: ignore[assignment]
    sent: list[Any] = []
    stage.send = lambda _to, msg: sent.append(msg)  # type: ignore[method-assign]
    stage.wakeupAfter = lambda *_args: None  # type: ignore[method-assign]
    stage.receiveMessage(Barrier(1, 1, 7, epoch=1), "upstream")
    stage.receiveMessage(WakeupMessage(timedelta(0), "acks"), "upstream")  # the pass is over
    assert sent == [] and stage.checkpoints == 1
    stage.holding = False
    stage.release()  # the buffer drained
    assert sent == [Ack(1, 1, 1)]


class _SlowReceiver:
    """A receiver's socket that takes ``room`` bytes, then would block."""

    def __init__(self) -> None:
        self.room = 0
        self.got = bytearray()

    def send(self, data: bytes) -> int:
        if not self.room:
            raise BlockingIOError
        n = min(self.room, len(data))
        self.got += data[:n]
        self.room -= n
        return n


def _sink(limit: int) -> tuple[SinkActor, _SlowReceiver, list[Any]]:
    sink = SinkActor()
    sink.epoch = 1
    receiver = _SlowReceiver()
    sink.sock = receiver  # type: ignore[assignment]
    sink.out, sink.limit, sink.unwritten, sink.barriers = bytearray(), limit, deque(), deque()
    sink.write_pending, sink.written_bytes, sink.written_records = False, 0, 0
    sent: list[Any] = []
    sink.send = lambda _to, msg: sent.append(msg)  # type: ignore[method-assign]
    sink.wakeupAfter = lambda *_args: None  # type: ignore[method-assign]
    return sink, receiver, sent


def test_a_sink_over_its_buffer_limit_holds_acknowledgements_until_the_receiver_reads() -> None:
    sink, receiver, sent = _sink(limit=25)
    for seq in (1, 2, 3):
        sink.receiveMessage(EncodedBatch(1, seq, b"x" * 10, 10, epoch=1), "router")
    sink.receiveMessage(WakeupMessage(timedelta(0), "acks"), "router")  # the pass is over
    assert sent == [] and len(sink.out) == 30  # the receiver took nothing: over the limit
    receiver.room = 10
    sink.receiveMessage(WakeupMessage(timedelta(0), "write"), "router")
    assert sent == [Ack(1, 3, 1)]  # under the limit again: one acknowledgement for all three
    assert receiver.got == b"x" * 10 and sink.written_records == 10


def test_a_sink_under_its_buffer_limit_acknowledges_after_the_pass() -> None:
    sink, receiver, sent = _sink(limit=100)
    sink.receiveMessage(EncodedBatch(1, 1, b"y" * 10, 10, epoch=1), "router")
    sink.receiveMessage(EncodedBatch(1, 2, b"y" * 10, 10, epoch=1), "router")
    assert sent == []  # acknowledgements go once the messages at hand are handled
    sink.receiveMessage(WakeupMessage(timedelta(0), "acks"), "router")
    assert sent == [Ack(1, 2, 1)]
