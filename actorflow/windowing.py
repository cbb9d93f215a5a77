"""Windows over aggregations, as in Wallaroo 0.6: the user-facing builders.

A window step is built in three parts and used like a state computation, after
``key_by`` (or without one: then every record has the one key ``None``)::

    pipeline.key_by(extract_user).to(
        wallaroo.range_windows(wallaroo.seconds(9))
        .with_slide(wallaroo.seconds(3))
        .with_delay(wallaroo.seconds(1))
        .over(TotalAggregation))

Every builder method returns a new builder (like pipelines, they are immutable), and
each mistake that can be seen here raises :class:`ApplicationError` at once, while
``application_setup`` runs, naming the window step. The semantics (watermarks,
triggers, late data) are in ``actorflow/runtime/windows.py``.

>>> import actorflow as wallaroo
>>> class Sum(wallaroo.Aggregation):
...     def initial_accumulator(self): return [0]
...     def update(self, x, acc): acc[0] += x
...     def combine(self, a, b): return [a[0] + b[0]]
...     def output(self, key, acc): return (key, acc[0])
>>> wallaroo.range_windows(wallaroo.seconds(6)).with_slide(wallaroo.seconds(3)).over(Sum).name
'range_windows(6s, slide 3s) over Sum'
>>> wallaroo.count_windows(0)
Traceback (most recent call last):
...
actorflow.errors.ApplicationError: count_windows(0): the count must be a positive integer; got 0
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from typing import Any

from actorflow.api import WindowStep, check_arity
from actorflow.errors import ApplicationError

LATE_DATA_POLICIES = ("drop", "fire_per_message", "place_in_oldest_window")


class Aggregation:
    """The base of an app's aggregation: subclass it and define the four methods.

    ``initial_accumulator()`` makes an empty accumulator; ``update(input, acc)`` adds one
    record to ``acc`` in place; ``combine(acc1, acc2)`` returns a new accumulator holding
    both (without changing either); ``output(key, acc)`` returns the window's output, a
    list of outputs, or None for none. ``combine`` must be associative and
    ``initial_accumulator()`` its identity (Wallaroo's rules): sliding windows are made of
    panes whose accumulators are combined. ``name()`` names the window step.

    >>> import actorflow as wallaroo
    >>> from actorflow import testing
    >>> class Count(wallaroo.Aggregation):
    ...     def initial_accumulator(self): return 0
    ...     def update(self, record, n): return n + 1
    ...     def combine(self, n1, n2): return n1 + n2
    ...     def output(self, key, n): return f"{key}: {n}"
    >>> Count().name()
    'Count'
    >>> app = wallaroo.build_application("counts", wallaroo.source("in", wallaroo.TCPSourceConfig(
    ...     "in", "127.0.0.1", 0, wallaroo.decoder()(lambda b: b)))
    ...     .key_by(lambda word: word[0])
    ...     .to(wallaroo.count_windows(2).over(Count))
    ...     .to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 0, wallaroo.encoder(str.encode))))
    >>> testing.run(app, ["apple", "bee", "avocado", "bean", "axe"]).only()
    ['a: 2', 'b: 2', 'a: 1']
    """

    def initial_accumulator(self) -> Any:
        raise NotImplementedError

    def update(self, input: Any, accumulator: Any) -> None:  # noqa: A002  # Wallaroo's name
        raise NotImplementedError

    def combine(self, accumulator1: Any, accumulator2: Any) -> Any:
        raise NotImplementedError

    def output(self, key: Any, accumulator: Any) -> Any:
        raise NotImplementedError

    def name(self) -> str:
        """The aggregation's name (Wallaroo's default: the class name). Define it to name
        the window step: two window steps of one app need different names."""
        return type(self).__name__


_METHODS = (("initial_accumulator", 0), ("update", 2), ("combine", 2), ("output", 2))


def _aggregation(step: str, agg: Any) -> Any:
    """An aggregation instance from a class (built with no arguments) or an instance,
    with every method present and of the right shape; fails naming the step."""
    label = getattr(agg, "__name__", type(agg).__name__)
    if inspect.isclass(agg):
        try:
            agg = agg()
        except Exception as exc:
            msg = (
                f"{step}: the aggregation class {label!r} cannot be built with no "
                f"arguments: {type(exc).__name__}: {exc}"
            )
            raise ApplicationError(msg) from exc
    for method, arity in _METHODS:
        func = getattr(agg, method, None)
        base = getattr(Aggregation, method)
        if func is None or getattr(func, "__func__", None) is base:
            msg = f"{step}: the aggregation {label!r} has no {method}() method"
            raise ApplicationError(msg)
        check_arity(f"{step}: aggregation method", f"{label}.{method}", func, arity)
    try:
        agg.initial_accumulator()
    except Exception as exc:
        msg = f"{step}: {label}.initial_accumulator() raised {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    return agg


def _positive(value: Any, what: str, step: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        unit = "" if what == "count" else " of nanoseconds (seconds(n), milliseconds(n), ...)"
        msg = f"{step}: the {what} must be a positive integer{unit}; got {value!r}"
        raise ApplicationError(msg)
    return value


def _not_negative(value: Any, what: str, step: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        msg = f"{step}: the {what} must be an integer of 0 or more (nanoseconds); got {value!r}"
        raise ApplicationError(msg)
    return value


def duration(ns: int) -> str:
    """A short text for ``ns`` nanoseconds, for step names and messages.

    >>> duration(9_000_000_000), duration(1_500_000), duration(120_000_000_000), duration(7)
    ('9s', '1500us', '2min', '7ns')
    """
    for unit, size in (("h", 3600 * 10**9), ("min", 60 * 10**9), ("s", 10**9), ("ms", 10**6)):
        if ns >= size and ns % size == 0:
            return f"{ns // size}{unit}"
    if ns >= 1000 and ns % 1000 == 0:
        return f"{ns // 1000}us"
    return f"{ns}ns"


@dataclass(frozen=True)
class RangeWindowsBuilder:
    """``range_windows(range)``: tumbling windows; ``with_slide`` makes them slide."""

    range: int
    slide: int | None = None
    delay: int | None = None
    late_data_policy: str | None = None

    @property
    def _label(self) -> str:
        return f"range_windows({duration(self.range)})"

    def with_slide(self, slide: int) -> RangeWindowsBuilder:
        """Start a window every ``slide`` nanoseconds (at most the range): windows overlap."""
        if self.slide is not None:
            raise ApplicationError(f"{self._label}: with_slide() may be called only once")
        _positive(slide, "slide", self._label)
        if slide > self.range:
            msg = (
                f"{self._label}: the slide {duration(slide)} is larger than the range "
                f"{duration(self.range)}; windows would leave gaps"
            )
            raise ApplicationError(msg)
        return replace(self, slide=slide)

    def with_delay(self, delay: int) -> RangeWindowsBuilder:
        """Fire a window ``delay`` nanoseconds after its end (waiting for late records)."""
        if self.delay is not None:
            raise ApplicationError(f"{self._label}: with_delay() may be called only once")
        return replace(self, delay=_not_negative(delay, "delay", self._label))

    def with_late_data_policy(self, policy: str) -> RangeWindowsBuilder:
        """What to do with a record whose windows have all fired: ``"drop"`` (the default,
        counted), ``"fire_per_message"`` (a window of its own, output at once) or
        ``"place_in_oldest_window"`` (into the key's oldest window still open)."""
        if self.late_data_policy is not None:
            msg = f"{self._label}: with_late_data_policy() may be called only once"
            raise ApplicationError(msg)
        return replace(self, late_data_policy=_policy(policy, self._label))

    def over(self, aggregation: Any) -> WindowStep:
        """The window step: ``aggregation`` (a class or an instance) over these windows."""
        slide = self.slide or self.range
        label = f"range_windows({duration(self.range)}"
        if slide != self.range:
            label += f", slide {duration(slide)}"
        if self.delay:
            label += f", delay {duration(self.delay)}"
        name = f"{label}) over {_agg_name(aggregation)}"
        agg = _aggregation(name, aggregation)
        return WindowStep(
            name=_step_name(f"{label}) over", aggregation, agg),
            kind="range",
            aggregation=agg,
            range=self.range,
            slide=slide,
            delay=self.delay or 0,
            late_data_policy=self.late_data_policy or "drop",
        )


COUNT_TIMEOUT = 5_000_000_000  # Wallaroo's count windows flush every 5 s


@dataclass(frozen=True)
class CountWindowsBuilder:
    """``count_windows(n)``: one window per ``n`` records of a key, and a partial window
    fires ``timeout`` (5 s, as in Wallaroo) after its first record."""

    count: int
    timeout: int | None = None

    def with_timeout(self, timeout: int) -> CountWindowsBuilder:
        """Fire a partial window once the watermark is ``timeout`` nanoseconds past its
        first record (an actorflow extension; default 5 s; 0: wait for the n-th record)."""
        label = f"count_windows({self.count})"
        if self.timeout is not None:
            raise ApplicationError(f"{label}: with_timeout() may be called only once")
        return replace(self, timeout=_not_negative(timeout, "timeout", label))

    def over(self, aggregation: Any) -> WindowStep:
        """The window step: ``aggregation`` over every ``count`` records of a key."""
        prefix = f"count_windows({self.count}) over"
        agg = _aggregation(f"{prefix} {_agg_name(aggregation)}", aggregation)
        return WindowStep(
            name=_step_name(prefix, aggregation, agg),
            kind="count",
            aggregation=agg,
            count=self.count,
            timeout=COUNT_TIMEOUT if self.timeout is None else self.timeout,
        )


@dataclass(frozen=True)
class SessionWindowsBuilder:
    """``session_windows(gap)``: a key's window closes after ``gap`` without records."""

    gap: int
    delay: int | None = None
    late_data_policy: str | None = None

    @property
    def _label(self) -> str:
        return f"session_windows({duration(self.gap)})"

    def with_delay(self, delay: int) -> SessionWindowsBuilder:
        """Close a session ``delay`` nanoseconds later than its gap alone would."""
        if self.delay is not None:
            raise ApplicationError(f"{self._label}: with_delay() may be called only once")
        return replace(self, delay=_not_negative(delay, "delay", self._label))

    def with_late_data_policy(self, policy: str) -> SessionWindowsBuilder:
        """As for range windows; ``place_in_oldest_window`` joins the key's open session."""
        if self.late_data_policy is not None:
            msg = f"{self._label}: with_late_data_policy() may be called only once"
            raise ApplicationError(msg)
        return replace(self, late_data_policy=_policy(policy, self._label))

    def over(self, aggregation: Any) -> WindowStep:
        """The window step: ``aggregation`` over each session of a key."""
        agg = _aggregation(f"{self._label} over {_agg_name(aggregation)}", aggregation)
        return WindowStep(
            name=_step_name(f"{self._label} over", aggregation, agg),
            kind="session",
            aggregation=agg,
            gap=self.gap,
            delay=self.delay or 0,
            late_data_policy=self.late_data_policy or "drop",
        )


def _agg_name(aggregation: Any) -> str:
    return getattr(aggregation, "__name__", type(aggregation).__name__)


def _step_name(prefix: str, aggregation: Any, agg: Any) -> str:
    """The window step's name: the aggregation's own ``name()`` if it defines one (as
    Wallaroo names window steps), else ``prefix`` and the aggregation's class name."""
    own = getattr(type(agg), "name", None)
    if own is None or own is Aggregation.name or not callable(own):
        return f"{prefix} {_agg_name(aggregation)}"
    try:
        name = agg.name()
    except Exception as exc:
        msg = f"{prefix} {_agg_name(aggregation)}: name() raised {type(exc).__name__}: {exc}"
        raise ApplicationError(msg) from exc
    if not isinstance(name, str) or not name:
        msg = f"{prefix} {_agg_name(aggregation)}: name() must return a non-empty str; got {name!r}"
        raise ApplicationError(msg)
    return name


def _policy(policy: Any, step: str) -> str:
    name = policy.replace("-", "_") if isinstance(policy, str) else policy
    if name not in LATE_DATA_POLICIES:
        msg = (
            f"{step}: unknown late data policy {policy!r}; "
            f"expected one of {', '.join(LATE_DATA_POLICIES)}"
        )
        raise ApplicationError(msg)
    return name


def range_windows(range: int) -> RangeWindowsBuilder:  # noqa: A002  # Wallaroo's name
    """Windows of ``range`` nanoseconds of event time, tumbling unless ``with_slide``.

    >>> import actorflow as wallaroo
    >>> wallaroo.range_windows(wallaroo.seconds(3)).with_slide(wallaroo.seconds(4))
    Traceback (most recent call last):
    ...
    actorflow.errors.ApplicationError: range_windows(3s): the slide 4s is larger than the range 3s; windows would leave gaps
    """  # noqa: E501
    label = f"range_windows({range!r})"
    return RangeWindowsBuilder(_positive(range, "range", label))


def count_windows(count: int) -> CountWindowsBuilder:
    """Windows of ``count`` records per key: the n-th record of a key fires its window.

    >>> import actorflow as wallaroo
    >>> class Count(wallaroo.Aggregation):
    ...     def initial_accumulator(self): return 0
    ...     def update(self, x, n): return n + 1
    ...     def combine(self, a, b): return a + b
    ...     def output(self, key, n): return f"{key}: {n}"
    >>> wallaroo.count_windows(100).over(Count).count
    100
    """
    return CountWindowsBuilder(_positive(count, "count", f"count_windows({count!r})"))


def session_windows(gap: int) -> SessionWindowsBuilder:
    """Per key, a window that stays open while records come less than ``gap`` apart
    (an actorflow extension; Wallaroo 0.6 has no session windows). It fires once the
    watermark passes the key's last record plus ``gap`` (plus ``with_delay``).

    >>> import actorflow as wallaroo
    >>> wallaroo.session_windows(wallaroo.minutes(30)).with_delay(wallaroo.seconds(5))
    SessionWindowsBuilder(gap=1800000000000, delay=5000000000, late_data_policy=None)
    """
    return SessionWindowsBuilder(_positive(gap, "gap", f"session_windows({gap!r})"))


__all__ = [
    "LATE_DATA_POLICIES",
    "Aggregation",
    "CountWindowsBuilder",
    "RangeWindowsBuilder",
    "SessionWindowsBuilder",
    "count_windows",
    "duration",
    "range_windows",
    "session_windows",
]
