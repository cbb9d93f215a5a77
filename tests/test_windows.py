"""Unit tests of windows: the API's build-time checks, the window contents
(actorflow/runtime/windows.py) and watermarks (runtime/watermarks.py), driven in-process
with made-up event times; and the doctests of the public window and testing modules."""

from __future__ import annotations

import doctest
import pickle
import random
from collections import defaultdict
from typing import Any

import pytest

import actorflow as wallaroo
from actorflow import api, windowing
from actorflow.errors import ApplicationError
from actorflow.runtime import local, watermarks, windows
from actorflow.runtime.steps import ErrorLog
from actorflow.runtime.watermarks import IDLE, InputWatermarks, SourceClock, StageWatermark
from actorflow.runtime.windows import FOREVER, windows_for

S = wallaroo.seconds(1)
MS = wallaroo.milliseconds(1)


class Sum(wallaroo.Aggregation):
    def initial_accumulator(self) -> list[int]:
        return [0]

    def update(self, x: int, acc: list[int]) -> None:
        acc[0] += x

    def combine(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0]]

    def output(self, key: Any, acc: list[int]) -> tuple[Any, int]:
        return (key, acc[0])


class IntSum(wallaroo.Aggregation):
    """An accumulator that is a plain int: update returns the new one."""

    def initial_accumulator(self) -> int:
        return 0

    def update(self, x: int, acc: int) -> int:
        return acc + x

    def combine(self, a: int, b: int) -> int:
        return a + b

    def output(self, key: Any, acc: int) -> list[Any]:
        return [acc, f"{key}:{acc}"]


def contents(step: api.WindowStep) -> windows.Windows:
    return windows_for(step, ErrorLog(step.name))


# -- the API ------------------------------------------------------------------------------


def test_time_helpers_minutes_and_hours() -> None:
    assert wallaroo.minutes(2) == 120 * S and wallaroo.hours(1) == 60 * wallaroo.minutes(1)


def test_builders_are_immutable_and_name_the_step() -> None:
    base = wallaroo.range_windows(6 * S)
    sliding = base.with_slide(3 * S)
    assert base.slide is None and sliding.slide == 3 * S
    step = sliding.with_delay(500 * MS).with_late_data_policy("fire-per-message").over(Sum)
    assert step.name == "range_windows(6s, slide 3s, delay 500ms) over Sum"
    assert (step.range, step.slide, step.delay) == (6 * S, 3 * S, 500 * MS)
    assert step.late_data_policy == "fire_per_message"
    tumbling = base.over(Sum())
    assert tumbling.slide == tumbling.range and tumbling.late_data_policy == "drop"
    assert wallaroo.count_windows(5).over(Sum).count == 5


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: wallaroo.range_windows(0), r"range_windows\(0\): the range must be a positive"),
        (lambda: wallaroo.range_windows(-5), "must be a positive integer"),
        (lambda: wallaroo.range_windows(1.5), "got 1.5"),
        (lambda: wallaroo.count_windows(0), r"count_windows\(0\): the count must be a positive"),
        (lambda: wallaroo.session_windows(0), "the gap must be a positive"),
        (
            lambda: wallaroo.range_windows(3 * S).with_slide(4 * S),
            r"range_windows\(3s\): the slide 4s is larger than the range 3s",
        ),
        (lambda: wallaroo.range_windows(3 * S).with_slide(0), "the slide must be a positive"),
        (lambda: wallaroo.range_windows(3 * S).with_delay(-1), "the delay must be"),
        (
            lambda: wallaroo.range_windows(3 * S).with_late_data_policy("keep"),
            r"range_windows\(3s\): unknown late data policy 'keep'; expected one of drop",
        ),
        (
            lambda: wallaroo.range_windows(3 * S).with_slide(S).with_slide(S),
            "with_slide\\(\\) may be called only once",
        ),
    ],
)
def test_window_mistakes_fail_at_build_time_naming_the_step(make: Any, message: str) -> None:
    with pytest.raises(ApplicationError, match=message):
        make()


def test_aggregation_methods_are_checked() -> None:
    class NoOutput(wallaroo.Aggregation):
        def initial_accumulator(self) -> int:
            return 0

        def update(self, x: Any, acc: Any) -> None:
            pass

        def combine(self, a: Any, b: Any) -> Any:
            return a

    class WrongUpdate(NoOutput):
        def update(self, x: Any) -> None:  # type: ignore[override]
            pass

        def output(self, key: Any, acc: Any) -> Any:
            return acc

    class Broken(WrongUpdate):
        def update(self, x: Any, acc: Any) -> None:
            pass

        def initial_accumulator(self) -> int:
            raise RuntimeError("no")

    class NeedsArgs(Sum):
        def __init__(self, limit: int) -> None:
            self.limit = limit

    name = r"count_windows\(2\) over "
    with pytest.raises(ApplicationError, match=name + "NoOutput: .* has no output"):
        wallaroo.count_windows(2).over(NoOutput)
    with pytest.raises(ApplicationError, match="WrongUpdate.update' must take 2 arguments"):
        wallaroo.count_windows(2).over(WrongUpdate)
    with pytest.raises(ApplicationError, match=r"Broken.initial_accumulator\(\) raised"):
        wallaroo.count_windows(2).over(Broken)
    with pytest.raises(ApplicationError, match="NeedsArgs' cannot be built with no arguments"):
        wallaroo.count_windows(2).over(NeedsArgs)
    assert wallaroo.count_windows(2).over(NeedsArgs(3)).aggregation.limit == 3  # an instance


def test_duck_typed_aggregation_is_accepted() -> None:
    class Plain:
        def initial_accumulator(self) -> int:
            return 0

        def update(self, x: int, acc: int) -> int:
            return acc + x

        def combine(self, a: int, b: int) -> int:
            return a + b

        def output(self, key: Any, acc: int) -> int:
            return acc

    assert wallaroo.count_windows(1).over(Plain).name == "count_windows(1) over Plain"


def test_to_takes_windows_and_hints_at_over() -> None:
    src = wallaroo.source("s", wallaroo.GenSourceConfig("s", local_gen()))
    p = src.key_by(lambda x: x).to(wallaroo.range_windows(S).over(Sum))
    assert p._node.kind == "to" and isinstance(p._node.spec, api.WindowStep)
    with pytest.raises(ApplicationError, match=r"finish the window with \.over"):
        src.to(wallaroo.range_windows(S))


def test_event_time_extractor_is_checked() -> None:
    cfg = wallaroo.GenSourceConfig("s", local_gen())
    with pytest.raises(ApplicationError, match="event_time .* must take 1 argument"):
        wallaroo.source("s", cfg, event_time=lambda a, b: 0)
    with pytest.raises(ApplicationError, match="idle is for sources with an event_time"):
        wallaroo.source("s", cfg, idle=5)
    spec = wallaroo.source("s", cfg, event_time=lambda r: r, idle=3 * S)._node.spec
    assert spec[2].idle == 3 * S


def test_two_window_steps_over_one_aggregation_have_distinct_names() -> None:
    src = wallaroo.source("s", wallaroo.GenSourceConfig("s", local_gen()))
    sink = wallaroo.TCPSinkConfig("127.0.0.1", 1, wallaroo.encoder(lambda x: b""))
    p = (
        src.key_by(lambda x: x)
        .to(wallaroo.range_windows(S).over(Sum))
        .to(wallaroo.count_windows(2).over(Sum))
        .to_sink(sink)
    )
    app = wallaroo.build_application("two", p)
    assert api.is_timed(app)
    names = [s.name for s in app.stages if s.kind == "to"]
    assert len(set(names)) == 2


def test_identical_window_steps_are_named_apart_by_the_aggregations_name() -> None:
    """Wallaroo names a window step by its aggregation's name(): two identical window
    steps are refused at build time, with the way out in the message."""
    src = wallaroo.source("s", wallaroo.GenSourceConfig("s", local_gen()))
    sink = wallaroo.TCPSinkConfig("127.0.0.1", 1, wallaroo.encoder(lambda x: b""))

    def app(first: Any, second: Any) -> wallaroo.Application:
        p = src.key_by(lambda x: x).to(wallaroo.range_windows(S).over(first))
        p = p.to(wallaroo.range_windows(S).over(second)).to_sink(sink)
        return wallaroo.build_application("twice", p)

    with pytest.raises(ApplicationError, match=r"two different steps are named .*name\(\)"):
        app(Sum, Sum)

    class Second(Sum):
        def name(self) -> str:
            return "second sum"

    assert Sum().name() == "Sum"  # Wallaroo's default: the class name
    names = [s.name for s in app(Sum, Second).stages if s.kind == "to"]
    assert names == ["range_windows(1s) over Sum", "second sum"]
    assert wallaroo.count_windows(2).over(Second()).name == "second sum"

    class Bad(Sum):
        def name(self) -> str:
            return ""

    with pytest.raises(ApplicationError, match="name\\(\\) must return a non-empty str"):
        wallaroo.session_windows(S).over(Bad)


def local_gen() -> Any:
    class Gen:
        def initial_value(self) -> int:
            return 1

        def apply(self, v: int) -> int | None:
            return v + 1 if v < 3 else None

    return Gen()


# -- range windows ------------------------------------------------------------------------

# The four messages of Wallaroo's documentation (windows.md), times in ms.
DOC = [("k", 1, 4043 * MS), ("k", 2, 1022 * MS), ("k", 3, 6000 * MS), ("k", 4, 5655 * MS)]


def test_tumbling_windows_place_by_event_time_not_arrival() -> None:
    w = contents(wallaroo.range_windows(3 * S).over(Sum))
    assert w.apply(DOC) == []
    out = w.advance(FOREVER)
    assert [(v, ts) for _, v, ts in out] == [
        (("k", 2), 3 * S - 1),  # [0, 3): message 2
        (("k", 5), 6 * S - 1),  # [3, 6): messages 1 and 4
        (("k", 3), 9 * S - 1),  # [6, 9): message 3
    ]


def test_sliding_windows_overlap_one_update_per_record() -> None:
    calls = defaultdict(int)

    class Counted(Sum):
        def update(self, x: int, acc: list[int]) -> None:
            calls["update"] += 1
            super().update(x, acc)

    w = contents(wallaroo.range_windows(6 * S).with_slide(3 * S).over(Counted))
    w.apply(DOC)
    out = w.advance(FOREVER)
    # [-3,3): 2; [0,6): 1+2+4; [3,9): 1+3+4; [6,12): 3 (docs: each message in its windows)
    assert [v[1] for _, v, _ in out] == [2, 7, 8, 3]
    assert calls["update"] == len(DOC)


def test_a_window_fires_when_the_watermark_passes_its_end_plus_the_delay() -> None:
    w = contents(wallaroo.range_windows(S).with_delay(500 * MS).over(Sum))
    w.apply([("a", 1, 100 * MS), ("a", 2, 900 * MS)])
    assert w.advance(S) == [] and w.advance(1499 * MS) == []
    assert w.advance(1500 * MS) == [("a", ("a", 3), S - 1)]
    assert w.advance(FOREVER) == []  # fired once


def test_empty_windows_do_not_fire_and_keys_are_forgotten() -> None:
    w = contents(wallaroo.range_windows(S).over(Sum))
    w.apply([("a", 1, 0), ("a", 2, 10 * S)])
    assert [ts for _, _, ts in w.advance(20 * S)] == [S - 1, 11 * S - 1]
    assert w.keys == {}


def test_per_key_outputs_come_in_window_order_under_random_data() -> None:
    rng = random.Random(5)
    step = wallaroo.range_windows(300 * MS).with_slide(100 * MS).over(IntSum)
    w = contents(step)
    records = [(rng.choice("abc"), rng.randrange(100), rng.randrange(5 * S)) for _ in range(500)]
    out: list = []
    now = 0
    for chunk in range(0, 500, 50):  # arrivals out of order, watermark far behind
        out += w.apply(records[chunk : chunk + 50])
    while now < 6 * S:
        now += rng.randrange(1, 400) * MS
        out += w.advance(now)
    want = expected_sliding(records, 300 * MS, 100 * MS)
    got: dict[str, list] = defaultdict(list)
    for key, value, ts in out:
        if isinstance(value, int):
            got[key].append((ts, value))
    assert got == want


def expected_sliding(records: list, rng_: int, slide: int) -> dict[str, list]:
    """Per key, (window end - 1, sum) for every window with a record: by brute force."""
    sums: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for key, value, ts in records:
        k = ts // slide
        while k * slide + rng_ > ts:
            if k * slide <= ts:
                sums[key][k] += value
            k -= 1
    return {
        key: [(k * slide + rng_ - 1, v) for k, v in sorted(ws.items())] for key, ws in sums.items()
    }


@pytest.mark.parametrize(("rng_ms", "slide_ms"), [(300, 100), (250, 100), (200, 200)])
def test_late_records_are_exactly_those_whose_last_window_has_fired(rng_ms, slide_ms) -> None:
    """Arrivals interleaved with watermarks, negative times too: a record is dropped iff
    its last window ended at or before the closed time when it came, and otherwise
    counts in its windows still open (brute force)."""
    rnd = random.Random(rng_ms)
    rng_, slide = rng_ms * MS, slide_ms * MS
    w = contents(wallaroo.range_windows(rng_).with_slide(slide).over(IntSum))
    sums: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    out, closed, dropped = [], -(10**18), 0
    for _ in range(60):
        batch = [
            (rnd.choice("ab"), rnd.randrange(9), rnd.randrange(-2 * S, 3 * S)) for _ in range(8)
        ]
        for key, value, ts in batch:
            if (ts // slide) * slide + rng_ <= closed:  # its last window has fired
                dropped += 1
            k = ts // slide
            while k * slide + rng_ > max(ts, closed):  # its windows still open
                sums[key][k] += value
                k -= 1
        out += w.apply(batch)
        closed = max(closed, rnd.randrange(-2 * S, 4 * S))
        out += w.advance(closed)
    out += w.advance(FOREVER)
    assert w.late_dropped == dropped > 0
    got: dict[str, list] = defaultdict(list)
    for key, value, ts in out:
        if isinstance(value, int):
            got[key].append((ts, value))
    want = {
        key: [(k * slide + rng_ - 1, v) for k, v in sorted(ws.items())] for key, ws in sums.items()
    }
    assert got == want  # per key in window order, too


def test_late_data_drop_is_counted() -> None:
    w = contents(wallaroo.range_windows(S).over(Sum))
    w.apply([("a", 1, 100 * MS)])
    w.advance(2 * S)
    assert w.apply([("a", 5, 200 * MS)]) == [] and w.late_dropped == 1
    assert w.advance(FOREVER) == []


def test_late_data_fire_per_message() -> None:
    w = contents(wallaroo.range_windows(S).with_late_data_policy("fire_per_message").over(Sum))
    w.apply([("a", 1, 100 * MS)])
    w.advance(2 * S)
    assert w.apply([("a", 5, 200 * MS)]) == [("a", ("a", 5), 200 * MS)]
    assert w.late_fired == 1


def test_late_data_place_in_oldest_window() -> None:
    step = wallaroo.range_windows(S).with_late_data_policy("place_in_oldest_window").over(Sum)
    w = contents(step)
    w.apply([("a", 1, 100 * MS), ("a", 10, 3500 * MS)])
    assert w.advance(2 * S) == [("a", ("a", 1), S - 1)]
    assert w.apply([("a", 5, 200 * MS)]) == [] and w.late_placed == 1
    assert w.advance(FOREVER) == [("a", ("a", 5), 3 * S - 1), ("a", ("a", 10), 4 * S - 1)]
    # [2s, 3s) is the oldest window still open: the late 5 goes there, not with the 10


def test_partly_late_record_counts_in_its_open_windows_only() -> None:
    w = contents(wallaroo.range_windows(2 * S).with_slide(S).over(Sum))
    w.apply([("a", 1, 500 * MS)])
    assert w.advance(S) == [("a", ("a", 1), S - 1)]  # [-1s, 1s)
    w.apply([("a", 2, 600 * MS)])  # [-1s, 1s) has fired; [0, 2s) is open
    assert w.advance(FOREVER) == [("a", ("a", 3), 2 * S - 1)] and w.late_dropped == 0


def test_user_errors_skip_and_are_counted() -> None:
    class Picky(Sum):
        def update(self, x: int, acc: list[int]) -> None:
            if x < 0:
                raise ValueError("negative")
            acc[0] += x

    w = contents(wallaroo.range_windows(S).over(Picky))
    w.apply([("a", 1, 0), ("a", -1, 1), ("a", 2, 2)])
    assert w.advance(FOREVER) == [("a", ("a", 3), S - 1)] and w.errors.count == 1


def test_snapshot_and_restore_give_the_same_outputs() -> None:
    """What a checkpoint writes and a rollback loads: the run goes on as if unbroken."""
    rng = random.Random(9)
    step = wallaroo.range_windows(S).with_slide(250 * MS).over(Sum)
    records = [(rng.choice("xyz"), rng.randrange(9), i * 7 * MS) for i in range(600)]
    whole = contents(step)
    first = contents(step)
    out_whole: list = []
    out_split: list = []
    for i in range(0, 600, 60):
        out_whole += whole.apply(records[i : i + 60]) + whole.advance(records[i][2])
        out_split += first.apply(records[i : i + 60]) + first.advance(records[i][2])
        if i == 300:
            second = contents(step)
            second.restore(pickle.loads(pickle.dumps(first.snapshot())))
            first = second
    out_whole += whole.advance(FOREVER)
    out_split += first.advance(FOREVER)
    assert out_split == out_whole


# -- count and session windows ------------------------------------------------------------


def test_count_windows_fire_every_n_records_of_a_key() -> None:
    w = contents(wallaroo.count_windows(5).over(Sum))
    out = w.apply([("k", i, i) for i in range(1, 21)] + [("j", 7, 0)])
    assert [v[1] for _, v, _ in out] == [15, 40, 65, 90]  # windows.md's example
    assert [ts for _, _, ts in out] == [5, 10, 15, 20]
    assert w.advance(4_999_999_999) == [] and list(w.keys) == ["j"]
    assert w.advance(FOREVER) == [("j", ("j", 7), 4_999_999_999)] and not w.keys


def test_a_partial_count_window_fires_after_the_timeout_as_in_wallaroo() -> None:
    """Wallaroo flushes partial count windows on a 5-s timer; here a partial window fires
    once the watermark is 5 s (or ``with_timeout``) past its first record."""
    s = wallaroo.seconds
    w = contents(wallaroo.count_windows(3).over(Sum))
    assert w.apply([("k", 1, s(1)), ("k", 2, s(2)), ("j", 5, s(3))]) == []
    assert w.advance(s(6) - 1) == []
    assert w.advance(s(6)) == [("k", ("k", 3), s(6) - 1)]  # k's window: 1 + 2
    assert w.apply([("k", 4, s(7))]) == [] and w.advance(s(8)) == [("j", ("j", 5), s(8) - 1)]
    restored = contents(wallaroo.count_windows(3).over(Sum))
    restored.restore(pickle.loads(pickle.dumps(w.snapshot())))
    assert restored.advance(s(12)) == [("k", ("k", 4), s(12) - 1)]
    never = contents(wallaroo.count_windows(3).with_timeout(0).over(Sum))
    never.apply([("k", 1, s(1))])
    assert never.advance(FOREVER) == [] and list(never.keys) == ["k"]
    with pytest.raises(ApplicationError, match=r"count_windows\(3\): the timeout"):
        wallaroo.count_windows(3).with_timeout(-1)


def test_int_accumulators_and_list_outputs() -> None:
    w = contents(wallaroo.count_windows(2).over(IntSum))
    assert w.apply([("k", 3, 0), ("k", 4, 1)]) == [("k", 7, 1), ("k", "k:7", 1)]


def test_session_windows_close_after_a_gap_without_records() -> None:
    w = contents(wallaroo.session_windows(10).over(Sum))
    w.apply([("k", 1, 0), ("k", 2, 5), ("k", 3, 30), ("j", 1, 2)])
    assert w.advance(11) == []
    # j's session closes at 2 + 10; k's 0 and 5 are one session, closed at 5 + 10
    assert w.advance(15) == [("j", ("j", 1), 2), ("k", ("k", 3), 5)]
    assert w.advance(40) == [("k", ("k", 3), 30)]
    assert w.keys == {}


def test_a_record_that_bridges_two_sessions_merges_them() -> None:
    w = contents(wallaroo.session_windows(10).over(Sum))
    w.apply([("k", 1, 0), ("k", 2, 18), ("k", 4, 9)])
    assert w.advance(FOREVER) == [("k", ("k", 7), 18)]


def test_session_late_data_policies() -> None:
    for policy, want in [
        ("drop", []),
        ("fire_per_message", [("k", ("k", 5), 1)]),
    ]:
        w = contents(wallaroo.session_windows(10).with_late_data_policy(policy).over(Sum))
        w.apply([("k", 1, 0)])
        w.advance(50)
        assert w.apply([("k", 5, 1)]) == want, policy
    w = contents(
        wallaroo.session_windows(10).with_late_data_policy("place_in_oldest_window").over(Sum)
    )
    w.apply([("k", 1, 0), ("k", 2, 45)])
    w.advance(30)
    assert w.apply([("k", 5, 1)]) == [] and w.advance(FOREVER) == [("k", ("k", 7), 45)]


# -- watermarks ---------------------------------------------------------------------------


def test_ingest_time_clock_is_monotonic() -> None:
    clock = SourceClock(None, started=0)
    assert clock.stamp([(None, 1)], now=10) == [(None, 1, 10)]
    assert clock.stamp([(None, 2)], now=8) == [(None, 2, 10)]  # the wall clock went back
    assert clock.watermark(now=9) == 10 and clock.watermark(now=20) == 20


def test_event_time_extractor_errors_skip_the_record() -> None:
    errors = ErrorLog("source")
    clock = SourceClock(api.EventTime(lambda r: r["t"], idle=100), started=0)
    assert clock.stamp([(None, {"t": 5}), (None, {}), (None, {"t": 3})], 1, errors) == [
        (None, {"t": 5}, 5),
        (None, {"t": 3}, 3),
    ]
    assert errors.count == 1 and clock.watermark(now=2) == 5


def test_stage_watermark_is_the_minimum_over_live_inputs() -> None:
    w = InputWatermarks(inputs=3, started=0.0, silent_after=5.0)
    w.heard("a", 100, 0.0)
    w.heard("b", 50, 0.0)
    assert w.current(1.0) is None  # "c" has not spoken yet
    w.heard("c", None, 1.0)
    assert w.current(1.0) is None  # "c" does not know yet
    w.heard("c", 70, 1.0)
    assert w.current(1.0) == 50
    w.heard("b", IDLE, 2.0)
    assert w.current(2.0) == 70
    w.heard("a", 200, 5.5)
    w.heard("c", 90, 5.5)
    assert w.current(5.5) == 90
    assert w.current(11.0) == IDLE  # every input silent


def test_gathering_ends_after_the_silence_limit() -> None:
    w = InputWatermarks(inputs=2, started=0.0, silent_after=5.0)
    w.heard("a", 40, 4.0)
    assert w.current(4.0) is None and w.current(6.0) == 40


def test_stage_watermark_never_goes_back() -> None:
    wm = StageWatermark()
    assert wm.update(None) is False and wm.out is None
    assert wm.update(10) is True and wm.out == 10
    assert wm.update(5) is False and (wm.value, wm.out) == (10, 10)
    assert wm.update(IDLE) is False and wm.out == IDLE and wm.value == 10


# -- doctests of the public modules -------------------------------------------------------


@pytest.mark.parametrize("module", [api, windowing, windows, watermarks, local])
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# -- watermarks on links --------------------------------------------------------------------


def test_a_batch_carries_the_watermark_of_its_own_records_only() -> None:
    """Records wait in an outlet while the window is full; a batch cut from the front of
    them must not promise the watermark that only the records behind it reached."""
    from actorflow.messages import Batch
    from actorflow.runtime.outlets import Outlet

    sent: list[Batch] = []
    o = Outlet(lambda _target, msg: sent.append(msg), "t", 1, window=1, batch_size=2, encoded=False)
    o.timed = True
    o.set_watermark(0)
    o.pump()  # nothing to carry it: a watermark-only batch
    assert [(b.records, b.watermark) for b in sent] == [([], 0)]
    for ts in (10, 20, 30, 40, 50):
        o.buf.append(("k", ts, ts))
        o.set_watermark(ts)
    for _ in range(4):
        o.acked()
    got = [(b.records, b.watermark) for b in sent[1:]]
    assert [[r[2] for r in recs] for recs, _ in got] == [[10, 20], [30, 40], [50], []][: len(got)]
    for recs, wm in got:  # each batch's watermark holds after its records...
        assert all(r[2] <= wm for r in recs)
    for i, (_, wm) in enumerate(got):  # ...and before every record still to come
        assert all(r[2] >= wm for later, _ in got[i + 1 :] for r in later)
    assert got[-1][1] == 50


# -- compatibility: Wallaroo's sender -------------------------------------------------------


def test_send_newlines_skips_blank_lines_as_giles_did(tmp_path: Any) -> None:
    from actorflow.tools.framing import frame
    from actorflow.tools.send import load_frames

    text = tmp_path / "t.txt"
    text.write_bytes(b"one\r\n\ntwo\n\r\n\nthree\n")
    assert load_frames(str(text), "newlines") == [frame(b"one"), frame(b"two"), frame(b"three")]
