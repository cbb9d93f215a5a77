"""actorflow.testing.run: apps run in this process on the cluster's plan and step code,
with a clock the test moves; outputs checked against values computed here. Also the
shipped example apps' logic (windows, _ARGS, an app's own serialize/deserialize)."""

from __future__ import annotations

import struct
from collections import defaultdict
from typing import Any

import pytest

import actorflow as wallaroo
from actorflow import testing
from actorflow.errors import ApplicationError
from actorflow.examples import alerts_windowed, alphabet, sequence_detector, window_detector

MS = wallaroo.milliseconds(1)
S = wallaroo.seconds(1)
ALPHABET_ARGS = ["--in", "alphabet@127.0.0.1:1", "--out", "127.0.0.1:2"]
DETECTOR_ARGS = ["--in", "Detector@127.0.0.1:1", "--out", "127.0.0.1:2"]


class Total(wallaroo.Aggregation):
    def initial_accumulator(self) -> int:
        return 0

    def update(self, vote: tuple[str, int], acc: int) -> int:
        return acc + vote[1]

    def combine(self, a: int, b: int) -> int:
        return a + b

    def output(self, key: Any, acc: int) -> tuple[Any, int]:
        return (key, acc)


@wallaroo.encoder
def as_line(x: Any) -> bytes:
    return f"{x}\n".encode()


@wallaroo.decoder(header_length=4, length_fmt=">I")
def votes(payload: bytes) -> tuple[str, int]:
    letter, n = struct.unpack(">sI", payload)
    return (letter.decode(), n)


def windowed_app(window: Any, keyed: bool = True, **source_kw: Any) -> wallaroo.Application:
    p = wallaroo.source("votes", wallaroo.TCPSourceConfig("votes", "h", 1, votes), **source_kw)
    if keyed:
        p = p.key_by(lambda v: v[0])
    p = p.to(window).to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 9, as_line))
    return wallaroo.build_application("windowed", p)


def test_a_state_app_runs_as_on_a_cluster() -> None:
    frames = [("a", 1), ("b", 2), ("a", 3)]
    out = testing.run(alphabet, frames, args=ALPHABET_ARGS)
    assert out.only() == [("a", 1), ("b", 2), ("a", 4)]
    assert out.encoded["tcp-sink 127.0.0.1:2"][-1] == struct.pack(">I", 7) + b"a => 4\n"


def test_payloads_go_through_the_decoder() -> None:
    out = testing.run(alphabet, [testing.Payload(b"a" + struct.pack(">I", 5))], args=ALPHABET_ARGS)
    assert out.only() == [("a", 5)]


def test_tumbling_windows_with_a_clock_per_record() -> None:
    clock = testing.Clock(start=0, per_record=100 * MS)
    inputs = [(c, i) for i, c in enumerate("abcabcabcabc")]  # one record every 100 ms
    out = testing.run(
        windowed_app(wallaroo.range_windows(500 * MS).over(Total)), inputs, clock=clock
    )
    want: dict[tuple[str, int], int] = defaultdict(int)
    for i, (c, n) in enumerate(inputs):
        want[(c, i * 100 // 500)] += n
    got = out.only()
    assert sorted(got) == sorted((c, n) for (c, _), n in want.items())
    for key in "abc":  # per key, window order
        assert [n for c, n in got if c == key] == [
            n for (c, _), n in sorted(want.items()) if c == key
        ]


def test_advance_fires_windows_before_the_input_ends() -> None:
    app = windowed_app(wallaroo.range_windows(S).over(Total))
    out = testing.run(app, [("a", 1), testing.Advance(2 * S), ("a", 2)], flush=False)
    assert out.only() == [("a", 1)]  # the second window is still open: no flush


def test_count_windows_without_key_by_have_one_key() -> None:
    app = windowed_app(wallaroo.count_windows(3).over(Total), keyed=False)
    out = testing.run(app, [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    assert out.only() == [(None, 6), (None, 9)]  # the last two: flushed at the end
    out = testing.run(app, [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)], flush=False)
    assert out.only() == [(None, 6)]  # the last two wait for a third, or for the timeout


def test_late_records_follow_the_policy_and_are_counted() -> None:
    inputs = [testing.At(5 * S, ("a", 1)), testing.At(1 * S, ("a", 10)), ("a", 100)]
    for policy, want in [
        ("drop", [("a", 101)]),
        ("fire_per_message", [("a", 10), ("a", 101)]),
        ("place_in_oldest_window", [("a", 111)]),
    ]:
        app = windowed_app(wallaroo.range_windows(S).with_late_data_policy(policy).over(Total))
        out = testing.run(app, inputs)
        assert out.only() == want, policy
    counts = out.windows["range_windows(1s) over Total"]
    assert counts["late_placed"] == 1 and counts["late_dropped"] == 0


def test_an_event_time_extractor_places_records_by_their_own_time() -> None:
    app = windowed_app(wallaroo.range_windows(10 * MS).over(Total), event_time=lambda v: v[1] * MS)
    out = testing.run(app, [("a", 1), ("a", 3), ("a", 12), ("a", 5), ("a", 25)])
    assert out.only() == [("a", 4), ("a", 12), ("a", 25)]  # 5 came after 12: late
    assert out.windows["range_windows(10ms) over Total"]["late_dropped"] == 1


def test_session_windows() -> None:
    app = windowed_app(wallaroo.session_windows(5 * MS).over(Total), event_time=lambda v: v[1] * MS)
    out = testing.run(app, [("a", 1), ("b", 4), ("a", 3), ("a", 20)])
    assert sorted(out.only()) == [("a", 4), ("a", 20), ("b", 4)]


def test_the_watermark_is_the_minimum_over_the_sources() -> None:
    """Two sources with event-time extractors: a window fires only once both are past it."""
    left = wallaroo.source(
        "l", wallaroo.TCPSourceConfig("l", "h", 1, votes), event_time=lambda v: v[1] * MS
    )
    right = wallaroo.source(
        "r", wallaroo.TCPSourceConfig("r", "h", 2, votes), event_time=lambda v: v[1] * MS
    )
    p = (
        left.merge(right)
        .key_by(lambda v: v[0])
        .to(wallaroo.range_windows(10 * MS).over(Total))
        .to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 9, as_line))
    )
    app = wallaroo.build_application("two", p)
    inputs = {"l": [("a", 1), ("a", 30)], "r": [("a", 5), ("a", 8), ("a", 12)]}
    out = testing.run(app, inputs, flush=False)
    assert out.only() == [("a", 14)]  # [0, 10): 1 + 5 + 8, once "r" too is past 10
    out = testing.run(app, {"l": [("a", 1), ("a", 30)], "r": [("a", 5)]}, flush=False)
    assert out.only() == []  # "r" is at 5: [0, 10) cannot fire yet


def test_a_window_after_a_window() -> None:
    p = (
        wallaroo.source("votes", wallaroo.TCPSourceConfig("votes", "h", 1, votes))
        .key_by(lambda v: v[0])
        .to(wallaroo.range_windows(S).over(Total))
        .collect()
        .to(wallaroo.range_windows(2 * S).over(Total))
        .to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 9, as_line))
    )
    app = wallaroo.build_application("twice", p)
    inputs = [("a", 1), ("b", 2), testing.Advance(S), ("a", 4), testing.Advance(S), ("a", 8)]
    assert testing.run(app, inputs).only() == [(None, 7), (None, 8)]


def test_range_windows_after_count_windows_still_fire() -> None:
    """A count window step passes the watermark on, so windows after it close too."""
    p = (
        wallaroo.source("votes", wallaroo.TCPSourceConfig("votes", "h", 1, votes))
        .key_by(lambda v: v[0])
        .to(wallaroo.count_windows(2).over(Total))
        .collect()
        .to(wallaroo.range_windows(S).over(Total))
        .to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 9, as_line))
    )
    app = wallaroo.build_application("counted", p)
    inputs = [("a", 1), ("a", 2), ("b", 5), ("b", 5), testing.Advance(2 * S), ("a", 1)]
    out = testing.run(app, inputs, flush=False)
    assert out.only() == [(None, 13)]  # (a, 3) and (b, 10) in [0, 1s), fired at 2 s


def test_user_errors_are_counted_not_raised() -> None:
    class Fragile(Total):
        def update(self, vote: tuple[str, int], acc: int) -> int:
            if vote[1] < 0:
                raise ValueError("negative")
            return acc + vote[1]

    app = windowed_app(wallaroo.count_windows(2).over(Fragile))
    out = testing.run(app, [("a", 1), ("a", -1), ("a", 2)])
    assert out.only() == [("a", 3)]
    assert out.errors == {"count_windows(2) over Fragile": 1}


def test_bad_inputs_are_refused() -> None:
    app = windowed_app(wallaroo.count_windows(2).over(Total))
    with pytest.raises(ApplicationError, match="unknown sources"):
        testing.run(app, {"nope": []})
    with pytest.raises(ApplicationError, match="takes an app module"):
        testing.run(42, [])


# -- the shipped windowed examples --------------------------------------------------------


def alerts_expected(n: int, step_ms: int, range_ms: int, slide_ms: int, threshold: int) -> dict:
    """Per user, the alerts of every window, in window order: by brute force."""
    sums: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for t in alerts_windowed.transactions(n, step_ms):
        ms = t.at // MS
        for k in range(ms // slide_ms - range_ms // slide_ms + 1, ms // slide_ms + 1):
            sums[t.user][k] += t.amount
    out: dict[str, list[str]] = defaultdict(list)
    for user, windows in sums.items():
        for _, total in sorted(windows.items()):
            if total > threshold:
                out[user].append(f"Deposit Alert for {user}: {total}")
            elif total < -threshold:
                out[user].append(f"Withdrawal Alert for {user}: {total}")
    return out


def alerts_args(n: int) -> list[str]:
    return ["--out", "127.0.0.1:2", "--transactions", str(n), "--event-time-ms", "10",
            "--window-range-ms", "900", "--window-slide-ms", "300"]  # fmt: skip


def per_user(alerts: list[Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for a in alerts:
        out[a.user].append(str(a))
    return out


def test_alerts_over_sliding_windows() -> None:
    out = testing.run(alerts_windowed, args=alerts_args(3000))
    assert per_user(out.only()) == alerts_expected(3000, 10, 900, 300, 2000)
    assert len(out.only()) > 50


def detector_expected(values: dict[str, list[int]], size: int, slide: int) -> list[tuple]:
    """(key, value, window) for every value of every window, windows by event time (ms)."""
    out = []
    for key, vals in values.items():
        windows: dict[int, list[int]] = defaultdict(list)
        for v in vals:
            for k in range(v // slide - size // slide + 1, v // slide + 1):
                windows[k].append(v)
        for _, w in sorted(windows.items()):
            out += [(key, v, tuple(w)) for v in w]
    return sorted(out)


@pytest.mark.parametrize("kind", ["tumbling", "sliding"])
def test_window_detector_range_windows(kind: str) -> None:
    values = {f"k{i}": list(range(i, 400, 7)) for i in range(5)}
    inputs = [window_detector.Message(k, v) for v in range(400) for k in values if v in values[k]]
    args = [*DETECTOR_ARGS, "--event-time", "--window-type", kind]
    out = testing.run(window_detector, inputs, args=args)
    slide = 25 if kind == "sliding" else 50
    assert sorted(out.only()) == detector_expected(values, 50, slide)


def test_window_detector_count_windows() -> None:
    inputs = [window_detector.Message(f"k{v % 3}", v) for v in range(60)]
    args = [*DETECTOR_ARGS, "--window-type", "counting", "--window-size", "4"]
    got = testing.run(window_detector, inputs, args=args).only()
    want = []
    for k in range(3):
        vals = list(range(k, 60, 3))
        for i in range(0, len(vals) - len(vals) % 4, 4):
            want += [(f"k{k}", v, tuple(vals[i : i + 4])) for v in vals[i : i + 4]]
    assert sorted(got) == sorted(want)


def test_sequence_detector_uses_args_and_its_own_codec() -> None:
    args = ["--out", "h:1", "--source", "gensource", "--partitions", "4", "--values", "9",
            "--depth", "2", "--topology-initializer"]  # fmt: skip
    out = testing.run(sequence_detector, args=args).only()
    assert "--cluster-initializer" in wallaroo._ARGS  # Wallaroo's spelling, for its apps
    last = {m.key: m.window for m in out}
    assert last == {str(k): (6, 7, 8, 9) for k in range(4)}
    assert {m.hops for m in out} == {4}  # source>router>state>router>state, via deserialize
    assert testing.run(sequence_detector, args=args[:-1]).only() == []  # not the initializer


def test_the_readme_windows_example_runs() -> None:
    """The README's Windows section: its app module and its unit test, as written."""
    import re
    import sys
    import types
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## Windows\n", 1)[1].split("\n## ", 1)[0]
    app_code, test_code = re.findall(r"```python\n(.*?)```", section, re.S)[:2]
    module = types.ModuleType("votes")
    exec(compile(app_code, "README.md (votes.py)", "exec"), module.__dict__)
    sys.modules["votes"] = module
    try:
        exec(compile(test_code, "README.md (test)", "exec"), {})
    finally:
        del sys.modules["votes"]
