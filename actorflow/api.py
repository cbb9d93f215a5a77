"""The application API, modelled on Wallaroo 0.6's Python API.

An app module defines ``application_setup(args)`` and returns
``build_application(name, pipeline)``. Pipelines are immutable: every method
returns a new Pipeline, so a prefix can be shared by several pipelines. The
result of ``build_application`` is an :class:`Application`: plain data (a list
of stages with integer parents) that the plan compiler consumes. Every mistake
that can be seen before anything runs raises :class:`ApplicationError` naming
the step.
"""

from __future__ import annotations

import inspect
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from actorflow.errors import ApplicationError

# --------------------------------------------------------------------------
# Wrapped user functions


def check_arity(what: str, name: str, func: Any, arity: int) -> None:
    """Fail at decoration time when ``func`` cannot be called with ``arity`` arguments."""
    if not callable(func):
        msg = f"{what} {name!r} must be callable; got {type(func).__name__}"
        raise ApplicationError(msg)
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return  # builtins without a signature: trust them
    try:
        sig.bind(*range(arity))
    except TypeError:
        plural = "argument" if arity == 1 else "arguments"
        msg = f"{what} {name!r} must take {arity} {plural}; its signature is {name}{sig}"
        raise ApplicationError(msg) from None


@dataclass(frozen=True, eq=False)
class Computation:
    """A stateless step: ``func(data)`` returns an output, or None to drop the record."""

    name: str
    func: Callable[[Any], Any]
    multi: bool = False

    def __call__(self, data: Any) -> Any:
        return self.func(data)


@dataclass(frozen=True, eq=False)
class StateComputation:
    """A state step: ``func(data, state)``; one ``state_class()`` instance per key."""

    name: str
    func: Callable[[Any, Any], Any]
    state_class: Callable[[], Any]
    multi: bool = False

    def __call__(self, data: Any, state: Any) -> Any:
        return self.func(data, state)


@dataclass(frozen=True, eq=False)
class WindowStep:
    """A window step (built by ``range_windows``, ``count_windows``, ``session_windows``
    in actorflow.windowing): keyed state like a state computation, whose per-key
    contents are the open windows of ``aggregation``. Times are in nanoseconds."""

    name: str
    kind: str  # range | count | session
    aggregation: Any
    range: int = 0
    slide: int = 0
    delay: int = 0
    count: int = 0
    gap: int = 0
    late_data_policy: str = "drop"
    timeout: int = 0  # count windows: a partial window fires this long after its first record


@dataclass(frozen=True, eq=False)
class EventTime:
    """A source's event-time extractor (an actorflow extension): ``func(record)`` returns
    the record's event time in nanoseconds since the Unix epoch. A source that has had
    no record for ``idle`` nanoseconds moves its watermark on with the wall clock."""

    func: Callable[[Any], int]
    idle: int = 2_000_000_000


@dataclass(frozen=True, eq=False)
class KeyExtractor:
    """``func(data)`` returns the partition key: str, bytes or int."""

    func: Callable[[Any], Any]

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", "key_by")

    def __call__(self, data: Any) -> Any:
        return self.func(data)


@dataclass(frozen=True, eq=False)
class Decoder:
    """Turns one frame payload (header removed) into a record."""

    func: Callable[[bytes], Any]
    header_length: int = 4
    length_fmt: str = ">I"

    def __call__(self, payload: bytes) -> Any:
        return self.func(payload)


@dataclass(frozen=True, eq=False)
class Encoder:
    """Turns a record into the bytes a sink writes."""

    func: Callable[[Any], bytes]

    def __call__(self, data: Any) -> bytes:
        return self.func(data)


def computation(name: str) -> Callable[[Callable[[Any], Any]], Computation]:
    """Decorate ``f(data) -> output | None`` as a stateless step called ``name``.

    >>> @computation(name="double")
    ... def double(x): return x * 2
    >>> double.name, double(21)
    ('double', 42)
    """

    def wrap(func: Callable[[Any], Any]) -> Computation:
        check_arity("computation", name, func, 1)
        return Computation(name, func)

    return wrap


def computation_multi(name: str) -> Callable[[Callable[[Any], Any]], Computation]:
    """Decorate ``f(data) -> list | None``: every element of the list is an output.

    >>> @computation_multi(name="split")
    ... def split(line): return line.split()
    >>> split.multi, split("a b")
    (True, ['a', 'b'])
    """

    def wrap(func: Callable[[Any], Any]) -> Computation:
        check_arity("computation_multi", name, func, 1)
        return Computation(name, func, multi=True)

    return wrap


def _check_state_class(name: str, state: Any) -> None:
    if not callable(state):
        msg = f"state_computation {name!r}: state must be a class; got {type(state).__name__}"
        raise ApplicationError(msg)


def state_computation(name: str, state: Callable[[], Any]) -> Callable[..., StateComputation]:
    """Decorate ``f(data, state) -> output | None``; ``state`` is built per key with no args.

    >>> class Total:
    ...     def __init__(self): self.n = 0
    >>> @state_computation(name="total", state=Total)
    ... def add(x, total):
    ...     total.n += x
    ...     return total.n
    >>> add.name, add.state_class is Total
    ('total', True)
    """
    _check_state_class(name, state)

    def wrap(func: Callable[[Any, Any], Any]) -> StateComputation:
        check_arity("state_computation", name, func, 2)
        return StateComputation(name, func, state)

    return wrap


def state_computation_multi(name: str, state: Callable[[], Any]) -> Callable[..., StateComputation]:
    """Decorate ``f(data, state) -> list | None``; one output per list element.

    >>> @state_computation_multi(name="seen", state=list)
    ... def seen(x, xs):
    ...     xs.append(x)
    ...     return list(xs)
    >>> seen.multi
    True
    """
    _check_state_class(name, state)

    def wrap(func: Callable[[Any, Any], Any]) -> StateComputation:
        check_arity("state_computation_multi", name, func, 2)
        return StateComputation(name, func, state, multi=True)

    return wrap


def key_extractor(func: Callable[[Any], Any]) -> KeyExtractor:
    """Decorate ``f(data) -> key``.

    >>> @key_extractor
    ... def first_letter(word): return word[0]
    >>> first_letter("actor")
    'a'
    """
    check_arity("key_extractor", getattr(func, "__name__", "?"), func, 1)
    return KeyExtractor(func)


def decoder(header_length: int = 4, length_fmt: str = ">I") -> Callable[..., Decoder]:
    """Decorate ``f(payload: bytes) -> record`` for a framed TCP source.

    >>> @decoder(header_length=4, length_fmt=">I")
    ... def decode(payload): return payload.decode()
    >>> decode(b"hello"), decode.header_length
    ('hello', 4)
    """
    try:
        size = struct.calcsize(length_fmt)
    except struct.error as exc:
        msg = f"decoder: length_fmt {length_fmt!r} is not a struct format ({exc})"
        raise ApplicationError(msg) from None
    if size != header_length:
        msg = (
            f"decoder: length_fmt {length_fmt!r} is {size} bytes, header_length is {header_length}"
        )
        raise ApplicationError(msg)

    def wrap(func: Callable[[bytes], Any]) -> Decoder:
        check_arity("decoder", getattr(func, "__name__", "?"), func, 1)
        return Decoder(func, header_length, length_fmt)

    return wrap


def encoder(func: Callable[[Any], bytes]) -> Encoder:
    """Decorate ``f(record) -> bytes`` for a sink.

    >>> @encoder
    ... def encode(line): return (line + "\\n").encode()
    >>> encode("hi")
    b'hi\\n'
    """
    check_arity("encoder", getattr(func, "__name__", "?"), func, 1)
    return Encoder(func)


# --------------------------------------------------------------------------
# Source and sink configs


DEFAULT_MAX_FRAME = 1 << 20


@dataclass(frozen=True)
class TCPSourceConfig:
    """A TCP listener reading length-prefixed frames, decoded by ``decoder``."""

    name: str
    host: str
    port: int
    decoder: Decoder
    parallelism: int = 1
    max_frame_size: int = DEFAULT_MAX_FRAME

    def __post_init__(self) -> None:
        object.__setattr__(self, "port", _port(self.port, f"TCPSourceConfig {self.name!r}"))
        if not isinstance(self.decoder, Decoder):
            msg = (
                f"TCPSourceConfig {self.name!r}: decoder must be decorated with "
                f"@decoder(...); got {type(self.decoder).__name__}"
            )
            raise ApplicationError(msg)


@dataclass(frozen=True)
class GenSourceConfig:
    """A source that generates records: ``gen.initial_value()``, then ``gen.apply(v)``.

    The stream ends when ``apply`` returns None.
    """

    name: str
    gen: Any

    def __post_init__(self) -> None:
        for method in ("initial_value", "apply"):
            if not callable(getattr(self.gen, method, None)):
                msg = f"GenSourceConfig {self.name!r}: the generator has no {method}() method"
                raise ApplicationError(msg)


@dataclass(frozen=True)
class TCPSinkConfig:
    """A TCP connection to ``host:port``; writes what ``encoder`` returns for each record."""

    host: str
    port: int
    encoder: Encoder

    def __post_init__(self) -> None:
        object.__setattr__(self, "port", _port(self.port, "TCPSinkConfig"))
        if not isinstance(self.encoder, Encoder):
            msg = (
                "TCPSinkConfig: encoder must be decorated with @encoder; "
                f"got {type(self.encoder).__name__}"
            )
            raise ApplicationError(msg)

    @property
    def name(self) -> str:
        return f"tcp-sink {self.host}:{self.port}"


SourceConfig = TCPSourceConfig | GenSourceConfig


def _port(value: Any, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        msg = f"{what}: port must be a number; got {value!r}"
        raise ApplicationError(msg) from None
    if not 0 <= port <= 65535:
        msg = f"{what}: port {port} is out of range 0-65535"
        raise ApplicationError(msg)
    return port


# --------------------------------------------------------------------------
# Pipelines: an immutable graph of nodes


@dataclass(frozen=True, eq=False)
class _Node:
    kind: str  # source | to | key_by | collect | merge | sink
    spec: Any
    parents: tuple[_Node, ...] = ()


@dataclass(frozen=True)
class Pipeline:
    """A stream under construction. Every method returns a new Pipeline."""

    _node: _Node

    @property
    def is_closed(self) -> bool:
        """True once the pipeline ends in a sink."""
        return self._node.kind == "sink"

    def _then(self, kind: str, spec: Any, *extra: _Node) -> Pipeline:
        if self.is_closed:
            msg = f"cannot add {kind} after to_sink/to_sinks: the pipeline is closed"
            raise ApplicationError(msg)
        return Pipeline(_Node(kind, spec, (self._node, *extra)))

    def to(self, comp: Computation | StateComputation | WindowStep) -> Pipeline:
        """Send every record through ``comp``: a computation, or windows ``.over(...)``."""
        if not isinstance(comp, Computation | StateComputation | WindowStep):
            hint = ""
            if hasattr(comp, "over"):
                hint = " (finish the window with .over(AggregationClass))"
            msg = (
                "to() takes a function decorated with @computation, @computation_multi, "
                "@state_computation or @state_computation_multi, or windows built with "
                f"range_windows/count_windows/session_windows(...).over(...); got {comp!r}{hint}"
            )
            raise ApplicationError(msg)
        return self._then("to", comp)

    def key_by(self, extractor: KeyExtractor | Callable[[Any], Any]) -> Pipeline:
        """Partition the stream: each record gets the key ``extractor(record)``."""
        if not isinstance(extractor, KeyExtractor):
            extractor = key_extractor(extractor)
        return self._then("key_by", extractor)

    def collect(self) -> Pipeline:
        """Send every record to one key, so one state instance sees them all."""
        return self._then("collect", None)

    def merge(self, other: Pipeline) -> Pipeline:
        """The union of this stream and ``other``."""
        if not isinstance(other, Pipeline):
            msg = f"merge() takes a Pipeline; got {type(other).__name__}"
            raise ApplicationError(msg)
        if other.is_closed:
            msg = "merge(): the other pipeline is closed by a sink"
            raise ApplicationError(msg)
        return self._then("merge", None, other._node)

    def to_sink(self, config: TCPSinkConfig) -> Pipeline:
        """Close the pipeline: every output goes to this sink."""
        return self.to_sinks([config])

    def to_sinks(self, configs: Iterable[TCPSinkConfig]) -> Pipeline:
        """Close the pipeline: every output goes to every one of these sinks."""
        configs = tuple(configs)
        if not configs:
            raise ApplicationError("to_sinks() needs at least one sink config")
        for c in configs:
            if not isinstance(c, TCPSinkConfig):
                msg = f"to_sink/to_sinks take TCPSinkConfig; got {type(c).__name__}"
                raise ApplicationError(msg)
        return self._then("sink", configs)


def source(
    name: str,
    config: SourceConfig,
    *,
    event_time: Callable[[Any], int] | None = None,
    idle: int | None = None,
) -> Pipeline:
    """Start a pipeline at a source.

    Windows place a record by its event time: by default its ingest time at this
    source; ``event_time(record)`` (an actorflow extension) takes it from the record,
    in nanoseconds. ``idle``: after that many nanoseconds without a record, the source's
    watermark follows the wall clock, so the last windows still fire (default 2 s).

    >>> cfg = TCPSourceConfig("in", "127.0.0.1", 7010, decoder()(lambda b: b))
    >>> source("in", cfg).is_closed
    False
    """
    if not isinstance(config, TCPSourceConfig | GenSourceConfig):
        msg = f"source {name!r}: config must be TCPSourceConfig or GenSourceConfig"
        raise ApplicationError(msg)
    extractor = None
    if event_time is not None:
        check_arity(
            f"source {name!r}: event_time", getattr(event_time, "__name__", "?"), event_time, 1
        )
        if idle is not None and (not isinstance(idle, int) or idle <= 0):
            msg = f"source {name!r}: idle must be a positive number of nanoseconds; got {idle!r}"
            raise ApplicationError(msg)
        extractor = EventTime(event_time, idle or EventTime.idle)
    elif idle is not None:
        raise ApplicationError(f"source {name!r}: idle is for sources with an event_time")
    return Pipeline(_Node("source", (name, config, extractor)))


# --------------------------------------------------------------------------
# The built application: plain data for the plan compiler


@dataclass(frozen=True)
class Stage:
    """One node of the application graph; ``parents`` index into Application.stages."""

    id: int
    kind: str  # source | to | key_by | collect | merge | sink
    name: str
    spec: Any
    parents: tuple[int, ...]


@dataclass(frozen=True)
class Application:
    """What ``build_application`` returns: the app's graph in topological order."""

    name: str
    stages: tuple[Stage, ...]
    options: dict[str, Any] = field(default_factory=dict)

    def stage(self, stage_id: int) -> Stage:
        return self.stages[stage_id]

    def children(self, stage_id: int) -> list[Stage]:
        return [s for s in self.stages if stage_id in s.parents]


def _stage_name(node: _Node) -> str:
    if node.kind == "source":
        return node.spec[0]
    if node.kind == "to":
        return node.spec.name
    if node.kind == "key_by":
        return f"key_by {node.spec.name}"
    if node.kind == "sink":
        return ", ".join(c.name for c in node.spec)
    return node.kind


def build_application(app_name: str, pipeline: Pipeline) -> Application:
    """Check the pipeline and freeze it into an :class:`Application`.

    >>> cfg = TCPSourceConfig("in", "127.0.0.1", 7010, decoder()(lambda b: b))
    >>> sink = TCPSinkConfig("127.0.0.1", 7002, encoder(lambda b: b))
    >>> app = build_application("echo", source("in", cfg).to_sink(sink))
    >>> [s.kind for s in app.stages]
    ['source', 'sink']
    """
    if not isinstance(pipeline, Pipeline):
        msg = f"build_application({app_name!r}, ...) takes a Pipeline; got {pipeline!r}"
        raise ApplicationError(msg)
    if not pipeline.is_closed:
        msg = f"application {app_name!r}: the pipeline must end with to_sink or to_sinks"
        raise ApplicationError(msg)
    order: list[_Node] = []
    seen: dict[int, int] = {}

    def visit(node: _Node) -> None:
        if id(node) in seen:
            return
        for p in node.parents:
            visit(p)
        seen[id(node)] = len(order)
        order.append(node)

    visit(pipeline._node)
    stages = tuple(
        Stage(i, n.kind, _stage_name(n), n.spec, tuple(seen[id(p)] for p in n.parents))
        for i, n in enumerate(order)
    )
    _check_names(app_name, stages)
    for s in stages:
        if s.kind == "to" and isinstance(s.spec, StateComputation):
            _check_state_builds(s.spec)
    return Application(app_name, stages)


def is_timed(app: Application) -> bool:
    """Whether records carry event times: the app has a window step.

    Records are ``(key, value)`` pairs between actors, and ``(key, value, event time)``
    triples in an app with windows, so apps without windows pay nothing for them.
    """
    return any(s.kind == "to" and isinstance(s.spec, WindowStep) for s in app.stages)


def _check_names(app_name: str, stages: Sequence[Stage]) -> None:
    owners: dict[str, Any] = {}
    for s in stages:
        if s.kind not in ("source", "to"):
            continue
        obj = s.spec[1] if s.kind == "source" else s.spec
        key = f"{s.kind}:{s.name}"
        if key in owners and owners[key] is not obj:
            what = "source" if s.kind == "source" else "step"
            msg = f"application {app_name!r}: two different {what}s are named {s.name!r}"
            if isinstance(obj, WindowStep):
                msg += (
                    "; give one of the aggregations a name() method returning another "
                    "name (a window step is named by its aggregation's name(), as in Wallaroo)"
                )
            raise ApplicationError(msg)
        owners[key] = obj


def _check_state_builds(comp: StateComputation) -> None:
    try:
        comp.state_class()
    except Exception as exc:
        msg = (
            f"state computation {comp.name!r}: its state class "
            f"{getattr(comp.state_class, '__name__', comp.state_class)!r} cannot be built "
            f"with no arguments: {type(exc).__name__}: {exc}"
        )
        raise ApplicationError(msg) from exc


# --------------------------------------------------------------------------
# Command-line helpers, as in Wallaroo


def _flag_values(args: Sequence[str], long: str, short: str) -> list[str]:
    values = []
    it = iter(range(len(args)))
    for i in it:
        a = args[i]
        if a in (long, short) and i + 1 < len(args):
            values.append(args[i + 1])
            next(it, None)
        elif a.startswith(long + "="):
            values.append(a.split("=", 1)[1])
    return values


def parse_input_addr(entry: str) -> tuple[str, str, str]:
    """``name@host:port`` or ``host:port`` (named after itself) -> (name, host, port)."""
    entry = entry.strip()
    name, _, addr = entry.rpartition("@")
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        msg = f"--in {entry!r}: expected host:port or name@host:port"
        raise ApplicationError(msg)
    return (name or addr, host, port)


def tcp_parse_input_addrs(args: Sequence[str]) -> list[tuple[str, str, str]]:
    """Read ``--in name@host:port,...`` from ``args`` into ``[(name, host, port)]``.

    >>> tcp_parse_input_addrs(["--in", "votes@127.0.0.1:7010,127.0.0.1:7011"])
    [('votes', '127.0.0.1', '7010'), ('127.0.0.1:7011', '127.0.0.1', '7011')]
    """
    values = _flag_values(args, "--in", "-i")
    if not values:
        raise ApplicationError("no --in address given (expected --in name@host:port)")
    return [parse_input_addr(e) for v in values for e in v.split(",") if e.strip()]


def tcp_parse_output_addrs(args: Sequence[str]) -> list[tuple[str, str]]:
    """Read ``--out host:port,...`` from ``args`` into ``[(host, port)]``.

    >>> tcp_parse_output_addrs(["--out", "127.0.0.1:7002"])
    [('127.0.0.1', '7002')]
    """
    values = _flag_values(args, "--out", "-o")
    if not values:
        raise ApplicationError("no --out address given (expected --out host:port)")
    out = []
    for v in values:
        for e in v.split(","):
            host, sep, port = e.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                msg = f"--out {e!r}: expected host:port"
                raise ApplicationError(msg)
            out.append((host, port))
    return out


# Time helpers: Wallaroo expresses durations in nanoseconds.
def nanoseconds(x: int) -> int:
    """Durations are nanoseconds already.

    >>> nanoseconds(5)
    5
    """
    return x


def microseconds(x: int) -> int:
    """``x`` microseconds in nanoseconds.

    >>> microseconds(1)
    1000
    """
    return x * 1000


def milliseconds(x: int) -> int:
    """``x`` milliseconds in nanoseconds.

    >>> milliseconds(1)
    1000000
    """
    return x * 1_000_000


def seconds(x: int) -> int:
    """``x`` seconds in nanoseconds, the unit of window ranges.

    >>> seconds(2)
    2000000000
    """
    return x * 1_000_000_000


def minutes(x: int) -> int:
    """``x`` minutes in nanoseconds.

    >>> minutes(1) == seconds(60)
    True
    """
    return x * 60_000_000_000


def hours(x: int) -> int:
    """``x`` hours in nanoseconds.

    >>> hours(1) == minutes(60)
    True
    """
    return x * 3_600_000_000_000
