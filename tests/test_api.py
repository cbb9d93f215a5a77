"""Unit tests of the application API (actorflow.api) and of the apps in apps/.

Nothing here starts an actor: decorators, pipelines, build_application, the
configs and the command-line helpers are plain Python. The apps are loaded the
way a worker loads them (actorflow.loader) and their user functions are run
in-process by a small reference interpreter of the built Application.
"""

from __future__ import annotations

import string
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import actorflow
import actorflow as wallaroo
from actorflow.api import (
    Application,
    Computation,
    Decoder,
    Encoder,
    KeyExtractor,
    StateComputation,
)
from actorflow.config import parse_worker_args
from actorflow.errors import ApplicationError
from actorflow.loader import load_application

REPO = Path(__file__).resolve().parents[1]
APPS = sorted((REPO / "apps").glob("*.py"))


# -- helpers ------------------------------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.n = 0


class Gen:
    def initial_value(self) -> int:
        return 0

    def apply(self, v: int) -> int | None:
        return v + 1 if v < 3 else None


@wallaroo.decoder(header_length=4, length_fmt=">I")
def utf8(payload: bytes) -> str:
    return payload.decode()


@wallaroo.encoder
def as_bytes(data: Any) -> bytes:
    return str(data).encode()


@wallaroo.computation("double")
def double(x: int) -> int:
    return 2 * x


@wallaroo.computation("inc")
def inc(x: int) -> int:
    return x + 1


@wallaroo.state_computation("count", Counter)
def count(x: Any, state: Counter) -> tuple[Any, int]:
    state.n += 1
    return (x, state.n)


def gen_source(name: str = "gen") -> wallaroo.Pipeline:
    return wallaroo.source(name, wallaroo.GenSourceConfig(name, Gen()))


def sink(port: int = 0) -> wallaroo.TCPSinkConfig:
    return wallaroo.TCPSinkConfig("127.0.0.1", port, as_bytes)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def split_frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        (n,) = struct.unpack(">I", data[:4])
        out.append(data[4 : 4 + n])
        data = data[4 + n :]
    return out


def run_reference(app: Application, feed: list[tuple[str, bytes]]) -> list[bytes]:
    """Run ``app`` in-process on ``feed``: (source name, frame payload) pairs, in order.

    Every record goes depth-first through the graph before the next one, with
    one state instance per (state step, key): one worker's semantics, one
    record at a time. Returns every sink's encoded output, in order.
    """
    children: dict[int, list[int]] = {s.id: [] for s in app.stages}
    for s in app.stages:
        for p in s.parents:
            children[p].append(s.id)
    states: dict[tuple[int, Any], Any] = {}
    out: list[bytes] = []

    def push(stage_id: int, key: Any, value: Any) -> None:
        for cid in children[stage_id]:
            visit(cid, key, value)

    def visit(sid: int, key: Any, value: Any) -> None:
        st = app.stage(sid)
        if st.kind == "sink":
            out.extend(cfg.encoder(value) for cfg in st.spec)
            return
        if st.kind == "key_by":
            return push(sid, st.spec(value), value)
        if st.kind == "collect":
            return push(sid, None, value)
        if st.kind == "merge":
            return push(sid, key, value)
        spec = st.spec
        if isinstance(spec, StateComputation):
            state = states.setdefault((sid, key), spec.state_class())
            result = spec(value, state)
        else:
            result = spec(value)
        results = (result or []) if spec.multi else [result]
        for r in results:
            if r is not None:
                push(sid, key, r)

    by_name = {s.name: s for s in app.stages if s.kind == "source"}
    for name, payload in feed:
        src = by_name[name]
        push(src.id, None, src.spec[1].decoder(payload))
    return out


# -- decorators and their arity checks ----------------------------------------------------


def test_decorators_wrap_and_call_through() -> None:
    @wallaroo.computation("plus one")
    def plus_one(x):
        return x + 1

    @wallaroo.computation_multi("twice")
    def twice(x):
        return [x, x]

    @wallaroo.state_computation("acc", Counter)
    def acc(x, state):
        state.n += x
        return state.n

    @wallaroo.state_computation_multi("acc many", Counter)
    def acc_many(x, state):
        state.n += x
        return [state.n, -state.n]

    @wallaroo.key_extractor
    def first(x):
        return x[0]

    @wallaroo.decoder(header_length=2, length_fmt=">H")
    def dec(payload):
        return payload[::-1]

    @wallaroo.encoder
    def enc(x):
        return bytes([x])

    assert isinstance(plus_one, Computation) and not plus_one.multi
    assert (plus_one.name, plus_one(41)) == ("plus one", 42)
    assert isinstance(twice, Computation) and twice.multi and twice(3) == [3, 3]
    s = Counter()
    assert isinstance(acc, StateComputation) and not acc.multi
    assert (acc.name, acc.state_class, acc(5, s), acc(2, s)) == ("acc", Counter, 5, 7)
    assert acc_many.multi and acc_many(4, Counter()) == [4, -4]
    assert isinstance(first, KeyExtractor) and first("xy") == "x" and first.name == "first"
    assert isinstance(dec, Decoder) and (dec.header_length, dec.length_fmt) == (2, ">H")
    assert dec(b"abc") == b"cba"
    assert isinstance(enc, Encoder) and enc(65) == b"A"


def _two(a, b):
    return a


def _one(a):
    return a


def _none():
    return None


@pytest.mark.parametrize(
    ("decorate", "func", "step"),
    [
        (wallaroo.computation("my step"), _two, "my step"),
        (wallaroo.computation("my step"), _none, "my step"),
        (wallaroo.computation_multi("multi step"), _two, "multi step"),
        (wallaroo.state_computation("state step", Counter), _one, "state step"),
        (wallaroo.state_computation("state step", Counter), lambda a, b, c: a, "state step"),
        (wallaroo.state_computation_multi("state multi", Counter), _one, "state multi"),
        (wallaroo.key_extractor, _two, "_two"),
        (wallaroo.decoder(), _two, "_two"),
        (wallaroo.encoder, _none, "_none"),
    ],
)
def test_wrong_arity_is_refused_naming_the_step(
    decorate: Callable[[Any], Any], func: Callable[..., Any], step: str
) -> None:
    with pytest.raises(ApplicationError, match=repr(step)):
        decorate(func)


def test_arity_check_accepts_defaults_and_varargs() -> None:
    assert wallaroo.computation("defaults")(lambda a, b=2: a + b)(1) == 3
    assert wallaroo.computation("varargs")(lambda *a: len(a))(1) == 1
    st = wallaroo.state_computation("kw", Counter)(lambda a, s, extra=None: a)
    assert st(7, Counter()) == 7


def test_not_callable_and_bad_state_class_are_refused() -> None:
    with pytest.raises(ApplicationError, match="'c'"):
        wallaroo.computation("c")(42)
    with pytest.raises(ApplicationError, match="'s'"):
        wallaroo.state_computation("s", 5)
    with pytest.raises(ApplicationError, match="'sm'"):
        wallaroo.state_computation_multi("sm", "not a class")


def test_decoder_header_must_match_length_format() -> None:
    with pytest.raises(ApplicationError, match="header_length"):
        wallaroo.decoder(header_length=2, length_fmt=">I")
    with pytest.raises(ApplicationError, match="struct format"):
        wallaroo.decoder(header_length=4, length_fmt="nonsense")
    assert wallaroo.decoder(header_length=8, length_fmt=">Q")(_one).header_length == 8


# -- pipelines ----------------------------------------------------------------------------


def _kinds_names(app: Application) -> list[tuple[str, str]]:
    return [(s.kind, s.name) for s in app.stages]


def test_pipeline_methods_return_new_pipelines_and_share_prefixes() -> None:
    base = gen_source()
    prefix = base.to(double)
    prefix_node = prefix._node
    p1 = prefix.to(inc).to_sink(sink(1))
    p2 = prefix.key_by(lambda x: str(x)).to(count).to_sink(sink(2))
    assert p1 is not prefix and p2 is not prefix and p1 is not p2
    assert prefix._node is prefix_node and not prefix.is_closed
    assert prefix_node.kind == "to" and prefix_node.spec is double
    assert p1.is_closed and p2.is_closed and not base.is_closed
    a1 = wallaroo.build_application("one", p1)
    a2 = wallaroo.build_application("two", p2)
    a0 = wallaroo.build_application("zero", prefix.to_sink(sink(3)))
    assert _kinds_names(a1) == [
        ("source", "gen"),
        ("to", "double"),
        ("to", "inc"),
        ("sink", "tcp-sink 127.0.0.1:1"),
    ]
    assert _kinds_names(a2) == [
        ("source", "gen"),
        ("to", "double"),
        ("key_by", "key_by <lambda>"),
        ("to", "count"),
        ("sink", "tcp-sink 127.0.0.1:2"),
    ]
    assert _kinds_names(a0) == [
        ("source", "gen"),
        ("to", "double"),
        ("sink", "tcp-sink 127.0.0.1:3"),
    ]
    assert [s.parents for s in a1.stages] == [(), (0,), (1,), (2,)]


def test_build_application_orders_a_merge_topologically() -> None:
    left = gen_source("left").to(double)
    right = gen_source("right").to(inc)
    app = wallaroo.build_application("m", left.merge(right).collect().to(count).to_sink(sink()))
    assert _kinds_names(app) == [
        ("source", "left"),
        ("to", "double"),
        ("source", "right"),
        ("to", "inc"),
        ("merge", "merge"),
        ("collect", "collect"),
        ("to", "count"),
        ("sink", "tcp-sink 127.0.0.1:0"),
    ]
    assert app.stage(4).parents == (1, 3)
    assert [c.id for c in app.children(4)] == [5]
    assert [s.id for s in app.stages] == list(range(8))


def test_key_by_accepts_a_plain_function() -> None:
    p = gen_source().key_by(_one)
    assert p._node.kind == "key_by" and isinstance(p._node.spec, KeyExtractor)
    with pytest.raises(ApplicationError, match="'_two'"):
        gen_source().key_by(_two)


def test_to_sinks_gives_every_sink_config() -> None:
    app = wallaroo.build_application("s", gen_source().to_sinks([sink(1), sink(2)]))
    last = app.stages[-1]
    assert last.kind == "sink" and [c.port for c in last.spec] == [1, 2]
    assert last.name == "tcp-sink 127.0.0.1:1, tcp-sink 127.0.0.1:2"


def test_pipeline_misuse_is_refused() -> None:
    closed = gen_source().to_sink(sink())
    with pytest.raises(ApplicationError, match="closed"):
        closed.to(double)
    with pytest.raises(ApplicationError, match="closed"):
        closed.to_sink(sink())
    with pytest.raises(ApplicationError, match="closed"):
        closed.key_by(_one)
    with pytest.raises(ApplicationError, match="closed"):
        gen_source().merge(closed)
    with pytest.raises(ApplicationError, match="Pipeline"):
        gen_source().merge("not a pipeline")
    with pytest.raises(ApplicationError, match="to\\(\\)"):
        gen_source().to(_one)
    with pytest.raises(ApplicationError, match="at least one"):
        gen_source().to_sinks([])
    with pytest.raises(ApplicationError, match="TCPSinkConfig"):
        gen_source().to_sink(("127.0.0.1", 7000))
    with pytest.raises(ApplicationError, match="'s'"):
        wallaroo.source("s", object())


# -- build_application errors -------------------------------------------------------------


def test_pipeline_without_sink_is_refused() -> None:
    with pytest.raises(ApplicationError, match="'no sink'.*to_sink"):
        wallaroo.build_application("no sink", gen_source().to(double))


def test_build_application_needs_a_pipeline() -> None:
    with pytest.raises(ApplicationError, match="Pipeline"):
        wallaroo.build_application("bad", [gen_source().to_sink(sink())])


def test_state_class_that_needs_arguments_is_refused_naming_the_step() -> None:
    class NeedsArgs:
        def __init__(self, start):
            self.n = start

    @wallaroo.state_computation("needy step", NeedsArgs)
    def needy(x, state):
        return x

    with pytest.raises(ApplicationError, match="'needy step'.*NeedsArgs.*no arguments"):
        wallaroo.build_application("a", gen_source().to(needy).to_sink(sink()))


def test_two_different_steps_with_one_name_are_refused() -> None:
    first = wallaroo.computation("same")(_one)
    second = wallaroo.computation("same")(_one)
    with pytest.raises(ApplicationError, match="'same'"):
        wallaroo.build_application("dup", gen_source().to(first).to(second).to_sink(sink()))
    # one step used twice is fine
    app = wallaroo.build_application("ok", gen_source().to(first).to(first).to_sink(sink()))
    assert [s.name for s in app.stages if s.kind == "to"] == ["same", "same"]


def test_two_different_sources_with_one_name_are_refused() -> None:
    p = gen_source("src").merge(gen_source("src"))
    with pytest.raises(ApplicationError, match="'src'"):
        wallaroo.build_application("dup", p.to_sink(sink()))


# -- configs ------------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["http", -1, 65536, None])
def test_bad_ports_are_refused(port: Any) -> None:
    with pytest.raises(ApplicationError, match="port"):
        wallaroo.TCPSourceConfig("in", "127.0.0.1", port, utf8)
    with pytest.raises(ApplicationError, match="port"):
        wallaroo.TCPSinkConfig("127.0.0.1", port, as_bytes)


def test_port_strings_become_ints() -> None:
    assert wallaroo.TCPSourceConfig("in", "127.0.0.1", "7010", utf8).port == 7010
    assert wallaroo.TCPSinkConfig("127.0.0.1", "65535", as_bytes).port == 65535
    assert wallaroo.TCPSinkConfig("127.0.0.1", 0, as_bytes).port == 0


def test_undecorated_decoder_and_encoder_are_refused() -> None:
    with pytest.raises(ApplicationError, match="'in'.*@decoder"):
        wallaroo.TCPSourceConfig("in", "127.0.0.1", 7000, lambda b: b)
    with pytest.raises(ApplicationError, match="@encoder"):
        wallaroo.TCPSinkConfig("127.0.0.1", 7000, lambda x: x)


def test_gen_source_config_needs_initial_value_and_apply() -> None:
    class NoInitial:
        def apply(self, v):
            return v

    class NoApply:
        def initial_value(self):
            return 0

    with pytest.raises(ApplicationError, match="'g'.*initial_value"):
        wallaroo.GenSourceConfig("g", NoInitial())
    with pytest.raises(ApplicationError, match="'g'.*apply"):
        wallaroo.GenSourceConfig("g", NoApply())
    assert wallaroo.GenSourceConfig("g", Gen()).gen.apply(1) == 2


# -- command-line helpers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--in", "votes@127.0.0.1:7010"], [("votes", "127.0.0.1", "7010")]),
        (["--in", "127.0.0.1:7010"], [("127.0.0.1:7010", "127.0.0.1", "7010")]),
        (["-i", "localhost:1"], [("localhost:1", "localhost", "1")]),
        (
            ["--in", "a@127.0.0.1:7010,b@10.0.0.2:7011"],
            [("a", "127.0.0.1", "7010"), ("b", "10.0.0.2", "7011")],
        ),
        (
            ["--in", "a@h:1, 127.0.0.1:2,"],
            [("a", "h", "1"), ("127.0.0.1:2", "127.0.0.1", "2")],
        ),
        (["--in", "my source@127.0.0.1:7000"], [("my source", "127.0.0.1", "7000")]),
        (["--in=w c@127.0.0.1:7020"], [("w c", "127.0.0.1", "7020")]),
        (
            ["--out", "127.0.0.1:1", "--in", "x@h:1", "--depth", "3", "--in", "y@h:2"],
            [("x", "h", "1"), ("y", "h", "2")],
        ),
    ],
)
def test_tcp_parse_input_addrs(args: list[str], expected: list[tuple[str, str, str]]) -> None:
    assert wallaroo.tcp_parse_input_addrs(args) == expected


@pytest.mark.parametrize(
    "args",
    [[], ["--out", "127.0.0.1:7002"], ["--in"], ["--input", "a@h:1"]],
)
def test_tcp_parse_input_addrs_without_flag(args: list[str]) -> None:
    with pytest.raises(ApplicationError, match="--in"):
        wallaroo.tcp_parse_input_addrs(args)


@pytest.mark.parametrize("bad", ["a@h", "a@h:port", "a@:7000", "7000"])
def test_tcp_parse_input_addrs_bad_address(bad: str) -> None:
    with pytest.raises(ApplicationError, match="--in"):
        wallaroo.tcp_parse_input_addrs(["--in", bad])


def test_tcp_parse_output_addrs() -> None:
    parse = wallaroo.tcp_parse_output_addrs
    assert parse(["--out", "127.0.0.1:7002"]) == [("127.0.0.1", "7002")]
    assert parse(["-o", "h:1,g:2"]) == [("h", "1"), ("g", "2")]
    assert parse(["--in", "a@h:9", "--out=h:3"]) == [("h", "3")]
    with pytest.raises(ApplicationError, match="--out"):
        parse(["--in", "a@h:9"])
    with pytest.raises(ApplicationError, match="--out"):
        parse(["--out", "nohost"])
    with pytest.raises(ApplicationError, match="--out"):
        parse(["--out", "h:notaport"])


def test_time_helpers_are_nanoseconds() -> None:
    assert wallaroo.nanoseconds(7) == 7
    assert wallaroo.microseconds(7) == 7_000
    assert wallaroo.milliseconds(7) == 7_000_000
    assert wallaroo.seconds(7) == 7_000_000_000
    assert wallaroo.seconds(1) == 1000 * wallaroo.milliseconds(1)
    assert wallaroo.milliseconds(1) == 1000 * wallaroo.microseconds(1)


def test_public_facade_exports_everything_it_lists() -> None:
    for name in actorflow.__all__:
        assert getattr(actorflow, name) is not None, name


# -- the apps in apps/ --------------------------------------------------------------------

GENERIC_ARGS = ["--in", "first@127.0.0.1:0,second@127.0.0.1:0", "--out", "127.0.0.1:0"]


def app_args_for(path: Path) -> list[str]:
    """The args a worker gives the app: from conf/<app>.conf when there is one."""
    conf = REPO / "conf" / f"{path.stem}.conf"
    if conf.exists():
        return list(parse_worker_args(["-c", str(conf)], app=str(path)).app_args)
    return GENERIC_ARGS


def test_there_are_apps() -> None:
    names = {p.stem for p in APPS}
    assert {"alphabet", "word_count", "vote_merge"} <= names


@pytest.mark.parametrize("path", APPS, ids=[p.stem for p in APPS])
def test_every_app_builds_from_its_config(path: Path) -> None:
    app = load_application(str(path), app_args_for(path))
    assert isinstance(app, Application)
    assert app.stages[0].kind == "source" and app.stages[-1].kind == "sink"


@pytest.mark.parametrize("path", APPS, ids=[p.stem for p in APPS])
def test_every_app_builds_from_generic_args(path: Path) -> None:
    app = load_application(str(path), GENERIC_ARGS)
    assert isinstance(app, Application)


def _load(stem: str, args: list[str] | None = None) -> Application:
    path = REPO / "apps" / f"{stem}.py"
    return load_application(str(path), args if args is not None else app_args_for(path))


def test_alphabet_app() -> None:
    app = _load("alphabet")
    assert app.name == "alphabet"
    assert _kinds_names(app) == [
        ("source", "alphabet"),
        ("key_by", "key_by extract_letter"),
        ("to", "add votes"),
        ("sink", "tcp-sink 127.0.0.1:7002"),
    ]
    feed = [
        ("alphabet", struct.pack(">sI", c.encode(), v))
        for c, v in [("a", 1), ("b", 5), ("a", 2), ("a", 10)]
    ]
    out = run_reference(app, feed)
    assert out == [frame(b"a => 1\n"), frame(b"b => 5\n"), frame(b"a => 3\n"), frame(b"a => 13\n")]


def test_word_count_app_shape() -> None:
    app = _load("word_count")
    assert app.name == "word_count"
    assert _kinds_names(app) == [
        ("source", "word count"),
        ("to", "split into words"),
        ("key_by", "key_by extract_word"),
        ("to", "count word"),
        ("sink", "tcp-sink 127.0.0.1:7003"),
    ]
    src = app.stages[0].spec[1]
    assert (src.name, src.host, src.port) == ("word count", "127.0.0.1", 7020)
    assert app.stages[1].spec.multi and isinstance(app.stages[3].spec, StateComputation)


def test_word_count_app_counts_words() -> None:
    app = _load("word_count")
    lines = [
        'Hello, world! "Hello" again...\n',
        "\u201cWORLD\u201d \u2018hello\u2019 -- ? don't\n",
        "   \n",
        "caf\u00e9 Caf\u00e9!",
    ]
    out = run_reference(app, [("word count", line.encode()) for line in lines])
    expected = [
        "hello => 1",
        "world => 1",
        "hello => 2",
        "again => 1",
        "world => 2",
        "hello => 3",
        "don't => 1",
        "caf\u00e9 => 1",
        "caf\u00e9 => 2",
    ]
    assert out == [frame(f"{e}\n".encode()) for e in expected]


def test_word_count_split_matches_the_generator_normalisation() -> None:
    from actorflow.tools.gen import word_counts, word_lines

    app = _load("word_count")
    lines = word_lines(200, seed=7)
    out = run_reference(app, [("word count", line.encode()) for line in lines])
    final: dict[str, int] = {}
    for payload in split_frames(b"".join(out)):
        word, n = payload.decode().rstrip("\n").split(" => ")
        assert int(n) == final.get(word, 0) + 1  # running count, one step at a time
        final[word] = int(n)
    assert final == word_counts(lines)
    assert all(w == w.lower() and w.strip(string.punctuation) == w for w in final)


def test_vote_merge_app_shape() -> None:
    app = _load("vote_merge")
    assert app.name == "vote_merge"
    assert _kinds_names(app) == [
        ("source", "east"),
        ("to", "tag east"),
        ("source", "west"),
        ("to", "tag west"),
        ("merge", "merge"),
        ("collect", "collect"),
        ("to", "leader board"),
        ("sink", "tcp-sink 127.0.0.1:7004"),
    ]
    ports = [s.spec[1].port for s in app.stages if s.kind == "source"]
    assert ports == [7030, 7031]


def test_vote_merge_app_keeps_a_leader_board() -> None:
    app = _load("vote_merge")
    votes = [
        ("east", "b", 3),
        ("west", "a", 3),  # tie 3-3: a leads (alphabetically smaller)
        ("west", "c", 1),
        ("east", "c", 5),  # c 6 takes the lead
        ("west", "a", 3),  # a 6 ties c 6: a leads
        ("east", "b", 0),  # b stays 3
        ("east", "z", 7),  # z 7 leads
        ("west", "a", 1),  # a 7 ties z 7: a leads
    ]
    out = run_reference(app, [(src, struct.pack(">sI", c.encode(), v)) for src, c, v in votes])
    expected = [
        "b => 3 (leader b with 3)",
        "a => 3 (leader a with 3)",
        "c => 1 (leader a with 3)",
        "c => 6 (leader c with 6)",
        "a => 6 (leader a with 6)",
        "b => 3 (leader a with 6)",
        "z => 7 (leader z with 7)",
        "a => 7 (leader a with 7)",
    ]
    assert out == [frame(f"{e}\n".encode()) for e in expected]


def test_vote_merge_tags_records_with_their_source() -> None:
    app = _load("vote_merge")
    tag_east, tag_west = (s.spec for s in app.stages if s.kind == "to" and "tag" in s.name)
    assert tag_east(("a", 1)) == ("east", "a", 1)
    assert tag_west(("q", 9)) == ("west", "q", 9)


def test_vote_merge_needs_two_inputs() -> None:
    with pytest.raises(ApplicationError, match="two --in"):
        _load("vote_merge", ["--in", "only@127.0.0.1:7030", "--out", "127.0.0.1:7004"])
