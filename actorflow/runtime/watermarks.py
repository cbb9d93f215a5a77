"""Watermarks: how far event time has got, at a source and at each stage.

In an app with windows every record carries its event time, and every batch carries
its sender's watermark: the promise that no record with an earlier event time will
follow on that link (a record that breaks it is late data). A batch's watermark holds
after its own records. A stage's watermark is the minimum over its live input links;
a link says :data:`IDLE` when everything upstream of it is idle, and a link silent for
:data:`LINK_SILENT` seconds (its worker is gone) no longer counts. Sources send a
watermark-only batch when they have nothing else to send, so quiet keys' windows
still fire. These classes are plain: tests drive them with a fake clock.
"""

from __future__ import annotations

from collections.abc import Hashable
from operator import itemgetter
from typing import Any

from actorflow.api import EventTime
from actorflow.runtime.steps import ErrorLog

IDLE = -1  # a link whose upstream is idle: it holds nothing back
LINK_SILENT = 10.0  # seconds without a message before an input link stops counting
TICK = 0.1  # seconds between a source's watermark-only batches, at most one a tick
_third = itemgetter(2)


class SourceClock:
    """A source's watermark and its records' event times (nanoseconds).

    Ingest time (no extractor): a record's event time is the moment the source read it,
    and the watermark is the clock, so it advances while no data comes. With the app's
    ``event_time`` extractor: the highest event time seen; before the first record the
    source holds the others back for ``idle`` (then says IDLE), and after ``idle``
    without records its watermark moves on with the wall clock.

    >>> clock = SourceClock(None, started=0)
    >>> clock.stamp([(None, "a")], now=5), clock.watermark(now=9)
    ([(None, 'a', 5)], 9)
    >>> timed = SourceClock(EventTime(lambda r: r[1], idle=10), started=0)
    >>> timed.watermark(now=3), timed.watermark(now=11)
    (0, -1)
    >>> timed.stamp([(None, ("x", 40))], now=20), timed.watermark(now=25), timed.watermark(now=35)
    ([(None, ('x', 40), 40)], 40, 45)
    """

    def __init__(self, event_time: EventTime | None, started: int) -> None:
        self.event_time = event_time
        self.started = started
        self.highest = -1  # highest event time (or ingest time) so far
        self.last_record = started  # wall clock of the last record

    def stamp(self, records: list, now: int, errors: ErrorLog | None = None) -> list:
        """``(key, value)`` pairs as ``(key, value, event time)`` triples."""
        if not records:
            return records
        self.last_record = now
        if self.event_time is None:
            ts = now if now > self.highest else self.highest
            self.highest = ts
            return [(k, v, ts) for k, v in records]
        func = self.event_time.func
        try:  # the common case in one comprehension; one by one only to skip failures
            out = [(k, v, func(v)) for k, v in records]
        except Exception:
            out = []
            for k, v in records:
                try:
                    out.append((k, v, func(v)))
                except Exception as exc:
                    if errors is not None:
                        errors.report(exc, k, v)
        if out:
            top = max(map(_third, out))
            if top > self.highest:
                self.highest = top
        return out

    def watermark(self, now: int) -> int:
        if self.event_time is None:
            if now > self.highest:
                self.highest = now
            return self.highest
        idle = self.event_time.idle
        if self.highest < 0:
            return 0 if now - self.started < idle else IDLE
        quiet = now - self.last_record - idle
        return self.highest + quiet if quiet > 0 else self.highest


class InputWatermarks:
    """A stage's watermark: the minimum over its live input links (seconds for liveness).

    ``current`` is None while not every input has reported yet (for up to
    LINK_SILENT after the start), IDLE when every live input is idle.

    >>> w = InputWatermarks(inputs=2, started=0.0)
    >>> w.heard("a", 50, now=1.0); w.current(now=1.0) is None
    True
    >>> w.heard("b", 30, now=1.0); w.current(now=1.0)
    30
    >>> w.heard("b", IDLE, now=2.0); w.current(now=2.0)
    50
    >>> w.current(now=12.0)  # "a" has been silent too long: its worker is gone
    -1
    """

    def __init__(self, inputs: int, started: float, silent_after: float = LINK_SILENT) -> None:
        self.inputs = inputs
        self.started = started
        self.silent_after = silent_after
        self.links: dict[Hashable, list[Any]] = {}  # link -> [watermark or None, heard at]

    def heard(self, link: Hashable, watermark: int | None, now: float) -> None:
        entry = self.links.get(link)
        if entry is None:
            self.links[link] = [watermark, now]
            return
        if watermark is not None:
            entry[0] = watermark
        entry[1] = now

    def current(self, now: float) -> int | None:
        links = self.links
        gathering = now - self.started < self.silent_after
        if gathering and (len(links) < self.inputs or any(e[0] is None for e in links.values())):
            return None
        lowest = None
        for wm, heard in links.values():
            if now - heard > self.silent_after or wm == IDLE:
                continue
            if wm is None:
                return None  # a live input that does not know yet
            if lowest is None or wm < lowest:
                lowest = wm
        return IDLE if lowest is None else lowest


class StageWatermark:
    """What a stage has seen (monotonic, for its windows) and what it passes on."""

    def __init__(self) -> None:
        self.value = -1  # the highest input watermark so far (-1: none yet)
        self.out: int | None = None  # what the stage's outlets carry: None, IDLE or value

    def update(self, current: int | None) -> bool:
        """Take the inputs' current watermark; True if the stage's own one advanced."""
        if current is None:
            return False
        if current == IDLE:
            self.out = IDLE
            return False
        advanced = current > self.value
        if advanced:
            self.value = current
        self.out = self.value
        return advanced
