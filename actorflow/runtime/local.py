"""Run an app in one process: the cluster's plan and step code, no actors, no sockets.

``actorflow.testing.run`` is this module's :func:`run`. The app is compiled by the same
plan compiler as on a cluster, and every plan stage runs the same code as its actor
(``runtime/steps.py``, ``runtime/windows.py``, ``runtime/watermarks.py``); records go
depth-first through the graph one input at a time, then watermarks move through it in
plan order, so window outputs come exactly where a cluster's watermarks put them. Time
is a :class:`Clock` that only the test moves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from actorflow.api import Application, GenSourceConfig, StateComputation, WindowStep, is_timed
from actorflow.errors import ApplicationError
from actorflow.loader import load_application, module_codec, set_args, setup_application
from actorflow.plan import Plan, PlanStage, compile_plan
from actorflow.runtime.steps import ErrorLog, KeyedState, run_ops, stateless_ops
from actorflow.runtime.watermarks import InputWatermarks, SourceClock, StageWatermark
from actorflow.runtime.windows import FOREVER, Windows, windows_for

GENERATOR_LIMIT = 1_000_000  # records taken from a generator source without inputs


class Clock:
    """The time that ``run``'s sources read, in nanoseconds since the Unix epoch.

    It moves only when told: by :class:`Advance` and :class:`At` items in the inputs,
    and by ``per_record`` after each record a source takes.

    >>> clock = Clock(start=1_000, per_record=10)
    >>> clock.now
    1000
    >>> clock.advance(5); clock.now
    1005
    """

    def __init__(self, start: int = 0, per_record: int = 0) -> None:
        self.now = start
        self.per_record = per_record

    def advance(self, ns: int) -> None:
        """Move the clock on by ``ns`` nanoseconds (never back)."""
        if ns < 0:
            raise ValueError(f"a clock moves forward only; got advance({ns})")
        self.now += ns


@dataclass(frozen=True)
class Advance:
    """An input item: the clock moves on by ``ns`` before the next item."""

    ns: int


@dataclass(frozen=True)
class At:
    """An input item: ``record``, ingested with the time ``time`` (the clock moves to
    it if it is later, never back: an earlier time makes the record late)."""

    time: int
    record: Any


@dataclass(frozen=True)
class Payload:
    """An input item for a TCP source: frame payload bytes that its decoder decodes."""

    data: bytes


class Outputs(dict):
    """What ``run`` returns: per sink name, the values that reached it, in order.

    ``encoded`` has the bytes each sink's encoder made of them; ``errors`` the user
    errors per step (each logged and skipped, as on a cluster); ``windows`` each window
    step's counts of late records.
    """

    def __init__(self) -> None:
        super().__init__()
        self.encoded: dict[str, list[bytes]] = {}
        self.errors: dict[str, int] = {}
        self.windows: dict[str, dict[str, int]] = {}

    def only(self) -> list:
        """The outputs of the app's one sink."""
        if len(self) != 1:
            raise ValueError(f"the app has {len(self)} sinks: {', '.join(self)}")
        return next(iter(self.values()))


@dataclass
class _Node:
    stage: PlanStage
    outputs: list[_Node] = field(default_factory=list)
    inputs: list[_Node] = field(default_factory=list)
    ops: list = field(default_factory=list)
    state: KeyedState | None = None
    windows: Windows | None = None
    clock: SourceClock | None = None
    sink: Any = None  # (name, encoder, values, encoded)
    watermarks: InputWatermarks | None = None
    watermark: StageWatermark = field(default_factory=StageWatermark)

    def out_watermark(self, now: int) -> int | None:
        if self.clock is not None:
            return self.clock.watermark(now)
        out = self.watermark.out
        if self.windows is not None and out is not None and out >= 0:
            return self.windows.output_watermark()
        return out


class _Runner:
    def __init__(self, app: Application, codec: tuple | None, clock: Clock, limit: int) -> None:
        self.app = app
        self.plan: Plan = compile_plan(app, parallel=False)
        self.timed = is_timed(app)
        self.codec = codec
        self.clock = clock
        self.logs: list[ErrorLog] = []
        self.result = Outputs()
        self.nodes: dict[str, _Node] = {}
        for st in self.plan.stages:
            self.nodes[st.id] = self.build(st, limit)
        for st in self.plan.stages:
            for i in st.inputs:
                self.nodes[i].outputs.append(self.nodes[st.id])
                self.nodes[st.id].inputs.append(self.nodes[i])
        for node in self.nodes.values():
            node.watermarks = InputWatermarks(len(node.inputs), 0.0, math.inf)

    def errors(self, name: str) -> ErrorLog:
        for log in self.logs:
            if log.step == name:
                return log
        log = ErrorLog(name, 20)
        self.logs.append(log)
        return log

    def build(self, st: PlanStage, limit: int) -> _Node:
        node = _Node(st)
        app = self.app
        if st.kind == "source":
            spec = app.stage(st.app_stages[0]).spec
            node.clock = SourceClock(spec[2] if len(spec) > 2 else None, self.clock.now)
        elif st.kind in ("chain", "router"):
            node.ops, logs = stateless_ops(app, st.app_stages, limit, self.timed)
            self.logs.extend(logs)
        elif st.kind == "state":
            spec = app.stage(st.app_stages[0]).spec
            if isinstance(spec, WindowStep):
                node.windows = windows_for(spec, self.errors(spec.name))
            else:
                assert isinstance(spec, StateComputation)
                node.state = KeyedState(spec, self.errors(spec.name), self.timed)
        else:
            cfg = app.stage(st.app_stages[0]).spec[st.sink_index]
            name = cfg.name
            while name in self.result:
                name += "'"
            self.result[name], self.result.encoded[name] = [], []
            node.sink = (name, cfg.encoder.func, self.errors(f"encoder of {cfg.name}"))
        return node

    # -- records ---------------------------------------------------------------------

    def take(self, source: _Node, item: Any) -> None:
        """One input item of a source: a record, an At, an Advance or a Payload."""
        if isinstance(item, Advance):
            self.clock.advance(item.ns)
            return
        now, at = self.clock.now, None
        if isinstance(item, At):
            at, item = item.time, item.record
            self.clock.now = max(self.clock.now, at)
        if isinstance(item, Payload):
            spec = self.app.stage(source.stage.app_stages[0]).spec[1]
            try:
                item = spec.decoder.func(item.data)
            except Exception as exc:
                self.errors(f"decoder of {source.stage.name}").report(exc, None, item.data)
                return
        records = [(None, item)]
        clock = source.clock
        assert clock is not None
        if self.timed and at is not None and clock.event_time is None:
            records = [(None, item, at)]  # ingested "at" that time, even an earlier one
            clock.highest, clock.last_record = max(clock.highest, at), now
        elif self.timed:
            records = clock.stamp(records, now, self.errors(source.stage.name))
        self.push(source, records)
        self.clock.now += self.clock.per_record

    def push(self, node: _Node, records: list) -> None:
        if not records:
            return
        carried = records
        if self.codec is not None:  # as between actors: through the app's own codec
            ser, deser = self.codec
            carried = [(r[0], deser(ser(r[1])), *r[2:]) for r in records]
        for nxt in node.outputs:  # sinks get encoded output on the same worker instead
            self.process(nxt, records if nxt.sink is not None else carried)

    def process(self, node: _Node, records: list) -> None:
        if node.sink is not None:
            name, encode, errors = node.sink
            for r in records:
                self.result[name].append(r[1])
                try:
                    self.result.encoded[name].append(encode(r[1]))
                except Exception as exc:
                    errors.report(exc, r[0], r[1])
            return
        if node.windows is not None:
            out = node.windows.apply(records)
        elif node.state is not None:
            out = node.state.apply(records)
        else:
            out = run_ops(node.ops, records)
        self.push(node, out)

    # -- watermarks ------------------------------------------------------------------

    def move_watermarks(self, now: int, flush: bool = False) -> None:
        """Every stage in plan order takes its inputs' watermark and fires its windows."""
        if not self.timed:
            return
        for node in self.nodes.values():
            if node.clock is not None or node.sink is not None:
                continue
            marks = node.watermarks
            assert marks is not None
            for i, up in enumerate(node.inputs):
                wm = FOREVER if flush and up.clock is not None else up.out_watermark(now)
                marks.heard(i, wm, 0.0)
            if node.watermark.update(marks.current(0.0)) and node.windows is not None:
                self.push(node, node.windows.advance(node.watermark.value))

    def finish(self) -> Outputs:
        for log in self.logs:
            if log.count:
                self.result.errors[log.step] = self.result.errors.get(log.step, 0) + log.count
        for node in self.nodes.values():
            if node.windows is not None:
                self.result.windows[node.stage.name] = node.windows.counters()
        return self.result


def _application(app: Any, args: tuple[str, ...]) -> tuple[Application, tuple | None]:
    if isinstance(app, Application):
        set_args(args)
        return app, None
    if isinstance(app, ModuleType):
        name = getattr(app, "__name__", "app")
        return setup_application(app, args, name), module_codec(app)
    if isinstance(app, str):
        from actorflow.loader import app_codec

        return load_application(app, args), app_codec(app)
    msg = f"run() takes an app module, its path or name, or an Application; got {app!r}"
    raise ApplicationError(msg)


def _feeds(runner: _Runner, inputs: Any, limit: int) -> dict[str, Iterator[Any]]:
    sources = {n.stage.name: n for n in runner.nodes.values() if n.clock is not None}
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        if not inputs:
            inputs = {}
        elif len(sources) != 1:
            msg = f"the app has {len(sources)} sources; give inputs as {{source name: [...]}}"
            raise ApplicationError(msg)
        else:
            inputs = {next(iter(sources)): inputs}
    unknown = set(inputs) - set(sources)
    if unknown:
        msg = f"inputs for unknown sources {sorted(unknown)}; the sources are {sorted(sources)}"
        raise ApplicationError(msg)
    feeds = {name: iter(items) for name, items in inputs.items()}
    for name, node in sources.items():
        spec = runner.app.stage(node.stage.app_stages[0]).spec[1]
        if name not in feeds and isinstance(spec, GenSourceConfig):
            feeds[name] = _generated(spec.gen, limit)
    return feeds


def _generated(gen: Any, limit: int) -> Iterator[Any]:
    value = gen.initial_value()
    for _ in range(limit):
        if value is None:
            return
        yield value
        value = gen.apply(value)


def run(
    app: Any,
    inputs: Mapping[str, Iterable[Any]] | Iterable[Any] = (),
    *,
    args: Iterable[str] = (),
    clock: Clock | None = None,
    flush: bool = True,
    generator_limit: int = GENERATOR_LIMIT,
) -> Outputs:
    """Run ``app`` in this process on ``inputs`` and return what reaches each sink.

    ``app`` is an app module (``application_setup(args)`` is called with ``args``), its
    path or module name, or an :class:`~actorflow.api.Application`. ``inputs`` maps
    source names to records as the source's decoder would return them (a plain list for
    an app with one source; :class:`Payload` items go through the decoder); the sources
    take one item each in turn. A generator source without inputs generates (up to
    ``generator_limit`` records). ``clock`` is the ingest time; :class:`Advance` and
    :class:`At` items move it. With ``flush``, the watermark passes every window at the
    end, as time going on after the input would on a cluster.

    >>> import actorflow as wallaroo
    >>> from actorflow import testing
    >>> class Sum(wallaroo.Aggregation):
    ...     def initial_accumulator(self): return 0
    ...     def update(self, x, acc): return acc + x[1]
    ...     def combine(self, a, b): return a + b
    ...     def output(self, key, acc): return (key, acc)
    >>> @wallaroo.encoder
    ... def enc(x): return repr(x).encode()
    >>> app = wallaroo.build_application("sums", wallaroo.source("in", wallaroo.TCPSourceConfig(
    ...     "in", "127.0.0.1", 0, wallaroo.decoder()(lambda b: b)))
    ...     .key_by(lambda r: r[0])
    ...     .to(wallaroo.range_windows(wallaroo.seconds(1)).over(Sum))
    ...     .to_sink(wallaroo.TCPSinkConfig("127.0.0.1", 0, enc)))
    >>> s = wallaroo.seconds
    >>> testing.run(app, [("a", 1), ("b", 2), testing.Advance(s(1)), ("a", 3), ("a", 4)]).only()
    [('a', 1), ('b', 2), ('a', 7)]
    """
    args = tuple(args)
    application, codec = _application(app, args)
    clock = clock if clock is not None else Clock()
    runner = _Runner(application, codec, clock, 20)
    feeds = _feeds(runner, inputs, generator_limit)
    nodes = {n.stage.name: n for n in runner.nodes.values() if n.clock is not None}
    while feeds:
        for name in list(feeds):
            try:
                item = next(feeds[name])
            except StopIteration:
                del feeds[name]
                continue
            runner.take(nodes[name], item)
            runner.move_watermarks(clock.now)
    runner.move_watermarks(clock.now, flush=flush)
    return runner.finish()
