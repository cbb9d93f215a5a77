"""Window contents of one window step on one worker: records in, outputs out.

Plain classes, driven by the state actor (``runtime/step.py``) and by the in-process
runner (``actorflow.testing.run``) alike; tests drive them with made-up times.
Records are ``(key, value, event time)`` triples, times in nanoseconds.

- **Range windows** are aligned to multiples of the slide since the Unix epoch:
  window k is ``[k * slide, k * slide + range)``. They are kept as *panes* of
  ``gcd(range, slide)``: each record updates exactly one pane's accumulator, and a
  window's output combines the panes it covers with ``combine``, so sliding windows
  cost one ``update`` per record. A window fires once the watermark reaches its end
  plus the delay, and only if a record fell into it; its output's event time is its
  last nanosecond, so per key, outputs come in window order. (Wallaroo 0.6 starts each
  key's windows at the watermark of its first record less a random offset of up to 80%
  of the range, to spread the firing, unless its Pony API's ``aligned()`` is used, and
  also calls ``output`` on a few empty windows after a key's last record, with an
  empty accumulator; its apps return None for those. Here windows are always aligned,
  so outputs are reproducible, and empty windows never fire.)
- **Count windows** fire on a key's n-th record (the event time of that record), and a
  partial one once the watermark passes its first record plus the timeout (5 s).
- **Session windows**: a key's records less than ``gap`` apart share a window, which
  fires once the watermark passes its last record plus the gap and the delay.
- **Late data**: a record none of whose windows is still open follows the step's
  policy: ``drop`` (counted), ``fire_per_message`` (a window of its own, output at
  once) or ``place_in_oldest_window`` (into the oldest window still open).

The per-key contents are keyed state: :meth:`Windows.snapshot` is what a checkpoint
writes, :meth:`Windows.restore` what a rollback loads.
"""

from __future__ import annotations

import heapq
import math
from typing import Any

from actorflow.api import WindowStep
from actorflow.runtime.steps import ErrorLog

NEVER = -(1 << 62)  # nothing closed yet
FOREVER = 1 << 62  # a watermark past every window: flush them all


class Windows:
    """The contents of one window step: per-key state, the closed time, late counts."""

    def __init__(self, step: WindowStep, errors: ErrorLog) -> None:
        self.step = step
        self.agg = step.aggregation
        self.errors = errors
        self.keys: dict[Any, Any] = {}
        self.closed = NEVER  # windows ending at or before this have fired
        self.before = NEVER  # the closed time before the last advance
        self.late_dropped = 0
        self.late_fired = 0
        self.late_placed = 0
        self._due: dict[Any, int] = {}  # key -> when its first open window closes
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = 0

    # -- interface ------------------------------------------------------------------

    def apply(self, records: list) -> list:
        """Add records to their windows; returns what fires at once (count windows, late
        records with ``fire_per_message``)."""
        raise NotImplementedError

    def advance(self, watermark: int) -> list:
        """The input watermark is now ``watermark``: fire every window it closes."""
        closed = watermark - self.step.delay
        if closed <= self.closed:
            return []
        self.before, self.closed = self.closed, closed
        out: list = []
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= closed:
            when, _, key = heapq.heappop(heap)
            if due.get(key) != when:
                continue  # superseded by an earlier window of the key
            del due[key]
            self.fire(key, out)
        return out

    def fire(self, key: Any, out: list) -> None:
        """Output the key's windows that ``self.closed`` closes, then reschedule it."""
        raise NotImplementedError

    def snapshot(self) -> dict:
        return {"closed": self.closed, "keys": self.keys}

    def restore(self, data: dict) -> None:
        self.closed = data["closed"]
        self.keys = data["keys"]
        self._due, self._heap = {}, []
        for key in self.keys:
            self.reschedule(key)

    def reschedule(self, key: Any) -> None:
        """Schedule the key's next window (after a restore)."""

    def output_watermark(self) -> int:
        """The watermark the step's outputs carry: no later output has an earlier time."""
        return max(self.closed, 0)

    def counters(self) -> dict:
        return {
            "late_dropped": self.late_dropped,
            "late_fired": self.late_fired,
            "late_placed": self.late_placed,
            "open_keys": len(self.keys),
        }

    # -- helpers --------------------------------------------------------------------

    def schedule(self, key: Any, when: int) -> None:
        current = self._due.get(key)
        if current is None or when < current:
            self._due[key] = when
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, key))

    def emit(self, key: Any, acc: Any, ts: int, out: list) -> None:
        try:
            result = self.agg.output(key, acc)
        except Exception as exc:
            self.errors.report(exc, key, acc)
            return
        if result is None:
            return
        if isinstance(result, list):
            out.extend((key, r, ts) for r in result if r is not None)
        else:
            out.append((key, result, ts))

    def update(self, acc: Any, key: Any, value: Any) -> Any:
        """``update(value, acc)`` in place; an update that returns a value replaces the
        accumulator (so plain ints work too). Returns the accumulator, or None on error."""
        try:
            new = self.agg.update(value, acc)
        except Exception as exc:
            self.errors.report(exc, key, value)
            return None
        return acc if new is None else new

    def fresh(self, key: Any, value: Any) -> Any:
        try:
            return self.agg.initial_accumulator()
        except Exception as exc:
            self.errors.report(exc, key, value)
            return None

    def late(self, key: Any, value: Any, ts: int, out: list) -> bool:
        """Handle a late record; True if the policy wants it placed in the oldest window."""
        policy = self.step.late_data_policy
        if policy == "place_in_oldest_window":
            self.late_placed += 1
            return True
        if policy == "fire_per_message":
            self.late_fired += 1
            acc = self.fresh(key, value)
            if acc is not None:
                acc = self.update(acc, key, value)
                if acc is not None:
                    self.emit(key, acc, ts, out)
        else:
            self.late_dropped += 1
        return False


class RangeWindows(Windows):
    """Tumbling and sliding windows as panes (see the module docstring)."""

    def __init__(self, step: WindowStep, errors: ErrorLog) -> None:
        super().__init__(step, errors)
        self.range = step.range
        self.slide = step.slide
        self.pane = math.gcd(step.range, step.slide)
        self.per_slide = step.slide // self.pane
        self.per_window = step.range // self.pane
        self.tumbling = step.slide == step.range  # a pane is a window: shorter paths

    def first_open(self) -> int:
        """The index of the first window that has not closed."""
        return (self.closed - self.range) // self.slide + 1

    def windows_of(self, i: int) -> tuple[int, int]:
        """The first and last window that pane ``i`` belongs to."""
        return -((self.per_window - 1 - i) // self.per_slide), i // self.per_slide

    def apply(self, records: list) -> list:
        out: list = []
        keys, agg_update, errors = self.keys, self.agg.update, self.errors
        pane, per_slide, slide, rng = self.pane, self.per_slide, self.slide, self.range
        low = self.first_open() * slide  # before this, every window of a record has fired
        for key, value, ts in records:
            if ts < low:  # late: its last window, ts // slide, is before the first open one
                if not self.late(key, value, ts, out):
                    continue
                i = self.first_open() * per_slide  # the oldest open window's first pane
            else:
                i = ts // pane
            panes = keys.get(key)
            if panes is None:
                panes = keys[key] = {}
            acc = panes.get(i)
            if acc is None:
                acc = self.fresh(key, value)
                if acc is None:
                    continue
                panes[i] = acc
                if self.tumbling:
                    self.schedule(key, i * slide + rng)
                else:
                    first = max(self.windows_of(i)[0], self.first_open())
                    self.schedule(key, first * slide + rng)
            try:  # inline: one call per record
                new = agg_update(value, acc)
            except Exception as exc:
                errors.report(exc, key, value)
                continue
            if new is not None:
                panes[i] = new
        return out

    def fire(self, key: Any, out: list) -> None:
        if self.tumbling:
            self.fire_tumbling(key, out)
            return
        panes = self.keys[key]
        slide, rng = self.slide, self.range
        first = (self.before - rng) // slide + 1  # windows before it fired earlier
        last = (self.closed - rng) // slide  # the last window closed now
        ks: set[int] = set()
        for i in panes:
            lo, hi = self.windows_of(i)
            ks.update(range(max(lo, first), min(hi, last) + 1))
        order = sorted(panes)
        for k in sorted(ks):
            start = k * self.per_slide
            inside = [panes[i] for i in order if start <= i < start + self.per_window]
            acc = inside[0] if len(inside) == 1 else self.combined(key, inside)
            if acc is not None:
                self.emit(key, acc, k * slide + rng - 1, out)
        for i in order:
            if self.windows_of(i)[1] <= last:
                del panes[i]
        if panes:
            self.reschedule(key)
        else:
            del self.keys[key]

    def fire_tumbling(self, key: Any, out: list) -> None:
        """Every pane up to the closed time is a whole window that fires now."""
        panes = self.keys[key]
        slide = self.slide
        last = (self.closed - slide) // slide
        for i in sorted(panes) if len(panes) > 1 else list(panes):
            if i <= last:
                self.emit(key, panes.pop(i), i * slide + slide - 1, out)
        if panes:
            self.schedule(key, min(panes) * slide + slide)
        else:
            del self.keys[key]

    def combined(self, key: Any, accs: list) -> Any:
        try:
            acc = self.agg.initial_accumulator()
            for a in accs:
                acc = self.agg.combine(acc, a)
        except Exception as exc:
            self.errors.report(exc, key, accs)
            return None
        return acc

    def reschedule(self, key: Any) -> None:
        opened = self.first_open()
        first = min(max(self.windows_of(i)[0], opened) for i in self.keys[key])
        self.schedule(key, first * self.slide + self.range)


class CountWindows(Windows):
    """A window per ``count`` records of a key; the key's state is
    ``[accumulator, n, first event time]``. As in Wallaroo, a partial window does not
    wait for ever: it fires once the watermark passes its first record's event time
    plus the step's ``timeout`` (Wallaroo: a 5-s timer flushing every partial window),
    and at the end of a ``testing.run``."""

    def apply(self, records: list) -> list:
        out: list = []
        keys = self.keys
        count, timeout = self.step.count, self.step.timeout
        for key, value, ts in records:
            entry = keys.get(key)
            if entry is None:
                acc = self.fresh(key, value)
                if acc is None:
                    continue
                entry = keys[key] = [acc, 0, ts]
                if timeout:
                    self.schedule(key, ts + timeout)
            acc = self.update(entry[0], key, value)
            if acc is None:
                continue
            entry[0] = acc
            entry[1] += 1
            if entry[1] >= count:
                del keys[key]
                self._due.pop(key, None)
                self.emit(key, acc, ts, out)
        return out

    def fire(self, key: Any, out: list) -> None:
        """The key's partial window has timed out: output it, at its timeout's end."""
        entry = self.keys.get(key)
        if entry is None:
            return
        end = entry[2] + self.step.timeout
        if end > self.closed:
            self.reschedule(key)
            return
        del self.keys[key]
        self.emit(key, entry[0], end - 1, out)

    def restore(self, data: dict) -> None:
        for entry in data["keys"].values():
            if len(entry) == 2:  # written before windows had a first time: from now on
                entry.append(max(data["closed"], 0))
        super().restore(data)

    def reschedule(self, key: Any) -> None:
        if self.step.timeout:
            self.schedule(key, self.keys[key][2] + self.step.timeout)


class SessionWindows(Windows):
    """Per key, its open sessions: ``[start, last, accumulator]``, in time order."""

    def output_watermark(self) -> int:
        return max(self.closed - self.step.gap, 0)  # a session's output time is its last

    def apply(self, records: list) -> list:
        out: list = []
        gap = self.step.gap
        for key, value, ts in records:
            sessions = self.keys.get(key) or []
            near = [s for s in sessions if s[0] - gap < ts < s[1] + gap]
            if not near and ts + gap <= self.closed:
                if not self.late(key, value, ts, out):
                    continue
                if sessions:  # the key's oldest open session takes it, bounds unchanged
                    near, ts = sessions[:1], sessions[0][0]
            if near:
                session = near[0]
                for other in near[1:]:  # the record bridges sessions: they become one
                    session[2] = self.merge(key, session[2], other[2])
                    session[1] = max(session[1], other[1])
                    sessions.remove(other)
                if session[2] is None:
                    sessions.remove(session)
                    continue
                session[0], session[1] = min(session[0], ts), max(session[1], ts)
            else:
                acc = self.fresh(key, value)
                if acc is None:
                    continue
                session = [ts, ts, acc]
                sessions.append(session)
                sessions.sort(key=lambda s: s[0])
            acc = self.update(session[2], key, value)
            if acc is not None:
                session[2] = acc
            self.keys[key] = sessions
            self.reschedule(key)
        return out

    def merge(self, key: Any, a: Any, b: Any) -> Any:
        if a is None:
            return None
        try:
            return self.agg.combine(a, b)
        except Exception as exc:
            self.errors.report(exc, key, (a, b))
            return None

    def fire(self, key: Any, out: list) -> None:
        gap, closed = self.step.gap, self.closed
        sessions = self.keys[key]
        for s in [s for s in sessions if s[1] + gap <= closed]:
            sessions.remove(s)
            self.emit(key, s[2], s[1], out)
        if sessions:
            self.reschedule(key)
        else:
            del self.keys[key]

    def reschedule(self, key: Any) -> None:
        when = min(s[1] for s in self.keys[key]) + self.step.gap
        if self._due.get(key) != when:
            self._due.pop(key, None)
            self.schedule(key, when)


def windows_for(step: WindowStep, errors: ErrorLog) -> Windows:
    """The window contents for a window step of any kind."""
    kinds = {"range": RangeWindows, "count": CountWindows, "session": SessionWindows}
    return kinds[step.kind](step, errors)
