"""Unit tests of the plan compiler (compile_plan, place, wire) and of partitioning.

Apps are built inline with the public API; nothing runs. Expected plans are
written out by hand from the coalescing rules: a run of stateless steps is one
chain actor; the stateless steps right before a state step become its router;
a state step ends a chain.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

import actorflow as wallaroo
from actorflow.api import Application, Computation, StateComputation
from actorflow.partitioning import DEFAULT_PARTITIONS, key_bytes, owners, partition_of
from actorflow.plan import Placement, Plan, compile_plan, fan_in, place, wire

W3 = ("w1", "w2", "w3")


# -- app building blocks ------------------------------------------------------------------


class Gen:
    def initial_value(self) -> int:
        return 0

    def apply(self, v: int) -> int | None:
        return v + 1 if v < 10 else None


class Total:
    def __init__(self) -> None:
        self.n = 0


@wallaroo.decoder()
def decode(payload: bytes) -> str:
    return payload.decode()


@wallaroo.encoder
def encode(data: Any) -> bytes:
    return repr(data).encode()


def step(name: str) -> Computation:
    return wallaroo.computation(name)(lambda x: x)


def state(name: str) -> StateComputation:
    def add(x: Any, s: Total) -> Any:
        s.n += 1
        return x

    return wallaroo.state_computation(name, Total)(add)


@wallaroo.key_extractor
def key(x: Any) -> str:
    return str(x)


def gen(name: str = "gen") -> wallaroo.Pipeline:
    return wallaroo.source(name, wallaroo.GenSourceConfig(name, Gen()))


def tcp(name: str = "tcp") -> wallaroo.Pipeline:
    return wallaroo.source(name, wallaroo.TCPSourceConfig(name, "127.0.0.1", 0, decode))


def sink(port: int = 0) -> wallaroo.TCPSinkConfig:
    return wallaroo.TCPSinkConfig("127.0.0.1", port, encode)


def build(pipeline: wallaroo.Pipeline) -> Application:
    return wallaroo.build_application("test", pipeline)


def shape(plan: Plan) -> list[tuple[str, str, tuple[int, ...], tuple[str, ...]]]:
    """(id, kind, app stages, inputs) of every plan stage, in order."""
    return [(s.id, s.kind, s.app_stages, s.inputs) for s in plan.stages]


def alphabet_app() -> Application:
    return build(tcp("alphabet").key_by(key).to(state("add votes")).to_sink(sink()))


def word_count_app() -> Application:
    split = wallaroo.computation_multi("split into words")(lambda line: line.split())
    return build(tcp("word count").to(split).key_by(key).to(state("count word")).to_sink(sink()))


def addresses(placement: Placement) -> dict[tuple[str, str], str]:
    return {(p.id, p.worker): f"{p.id}@{p.worker}" for p in placement.placed}


# -- compile_plan -------------------------------------------------------------------------


def test_alphabet_folds_key_by_into_the_router() -> None:
    app = alphabet_app()
    plan = compile_plan(app)
    # app stages: 0 source, 1 key_by, 2 add votes, 3 sink
    assert shape(plan) == [
        ("source0", "source", (0,), ()),
        ("router1", "router", (1,), ("source0",)),
        ("state2", "state", (2,), ("router1",)),
        ("sink3.0", "sink", (3,), ("state2",)),
    ]
    assert plan.app_name == "test"
    assert plan.stage("state2").name == "add votes" and plan.stage("state2").keyed
    assert [s.id for s in plan.outputs("router1")] == ["state2"]
    with pytest.raises(KeyError):
        plan.stage("chain1")


def test_word_count_router_runs_split_and_key_by() -> None:
    app = word_count_app()
    plan = compile_plan(app)
    assert shape(plan) == [
        ("source0", "source", (0,), ()),
        ("router1", "router", (1, 2), ("source0",)),
        ("state3", "state", (3,), ("router1",)),
        ("sink4.0", "sink", (4,), ("state3",)),
    ]
    assert [app.stage(i).kind for i in plan.stage("router1").app_stages] == ["to", "key_by"]


def test_three_stateless_steps_coalesce_into_one_chain() -> None:
    plan = compile_plan(build(gen().to(step("a")).to(step("b")).to(step("c")).to_sink(sink())))
    assert shape(plan) == [
        ("source0", "source", (0,), ()),
        ("chain1", "chain", (1, 2, 3), ("source0",)),
        ("sink4.0", "sink", (4,), ("chain1",)),
    ]
    assert plan.stage("chain1").name == "a | b | c"


def test_a_state_step_ends_a_chain() -> None:
    app = build(gen().to(step("before")).to(state("s")).to(step("after")).to_sink(sink()))
    plan = compile_plan(app)
    assert shape(plan) == [
        ("source0", "source", (0,), ()),
        ("router1", "router", (1,), ("source0",)),
        ("state2", "state", (2,), ("router1",)),
        ("chain3", "chain", (3,), ("state2",)),
        ("sink4.0", "sink", (4,), ("chain3",)),
    ]
    assert not plan.stage("state2").keyed


def test_state_after_state_gets_a_router_in_between() -> None:
    app = build(gen().key_by(key).to(state("s1")).to(state("s2")).to_sink(sink()))
    plan = compile_plan(app)
    kinds = [(s.kind, s.inputs) for s in plan.stages]
    assert kinds == [
        ("source", ()),
        ("router", ("source0",)),
        ("state", ("router1",)),
        ("router", ("state2",)),
        ("state", (plan.stages[3].id,)),
        ("sink", ("state3",)),
    ]
    assert plan.stages[4].id == "state3" and plan.stages[4].name == "s2"
    assert plan.stages[2].keyed and plan.stages[4].keyed


def _stateless_app_stages(app: Application, plan: Plan) -> dict[str, list[str]]:
    """For each router and chain, the app stages it runs that are not stateless steps."""
    bad = {}
    for s in plan.stages:
        if s.kind in ("router", "chain"):
            bad[s.id] = [
                app.stage(i).name
                for i in s.app_stages
                if not (
                    app.stage(i).kind in ("key_by", "collect")
                    or (app.stage(i).kind == "to" and isinstance(app.stage(i).spec, Computation))
                )
            ]
    return bad


@pytest.mark.parametrize(
    "pipeline",
    [
        pytest.param(lambda: gen().key_by(key).to(state("s1")).to(state("s2")), id="state-state"),
        pytest.param(lambda: gen().to(state("s")), id="source-state"),
        pytest.param(lambda: gen("a").merge(gen("b")).to(state("s")), id="merge-state"),
    ],
)
def test_a_router_with_no_steps_runs_no_ops(pipeline: Any) -> None:
    app = build(pipeline().to_sink(sink()))
    plan = compile_plan(app)
    routers = [s for s in plan.stages if s.kind == "router"]
    assert routers
    assert _stateless_app_stages(app, plan) == {
        s.id: [] for s in plan.stages if s.kind in ("router", "chain")
    }


def test_the_stage_after_a_merge_takes_both_inputs() -> None:
    left = gen("left").to(step("l"))
    right = tcp("right").to(step("r"))
    app = build(left.merge(right).to(step("after")).to_sink(sink()))
    # app stages: 0 left, 1 l, 2 right, 3 r, 4 merge, 5 after, 6 sink
    plan = compile_plan(app)
    assert shape(plan) == [
        ("source0", "source", (0,), ()),
        ("chain1", "chain", (1,), ("source0",)),
        ("source2", "source", (2,), ()),
        ("chain3", "chain", (3,), ("source2",)),
        ("chain5", "chain", (5,), ("chain1", "chain3")),
        ("sink6.0", "sink", (6,), ("chain5",)),
    ]


def test_a_sink_right_after_a_merge_of_sources_reads_both() -> None:
    plan = compile_plan(build(gen("a").merge(gen("b")).to_sink(sink())))
    assert shape(plan)[-1] == ("sink3.0", "sink", (3,), ("source0", "source1"))


def test_to_sinks_makes_one_sink_stage_per_config() -> None:
    app = build(gen().to(step("a")).to_sinks([sink(1), sink(2)]))
    plan = compile_plan(app)
    sinks = [s for s in plan.stages if s.kind == "sink"]
    assert [(s.id, s.inputs, s.sink_index, s.name) for s in sinks] == [
        ("sink2.0", ("chain1",), 0, "tcp-sink 127.0.0.1:1"),
        ("sink2.1", ("chain1",), 1, "tcp-sink 127.0.0.1:2"),
    ]
    assert [s.id for s in plan.outputs("chain1")] == ["sink2.0", "sink2.1"]


def test_a_shared_prefix_is_not_extended_by_either_branch() -> None:
    prefix = gen().to(step("p"))
    a = prefix.to(step("a"))
    b = prefix.to(step("b"))
    app = build(a.merge(b).to_sink(sink()))
    plan = compile_plan(app)
    chain_p = [s for s in plan.stages if s.kind == "chain" and s.name == "p"]
    assert len(chain_p) == 1 and chain_p[0].app_stages == (1,)
    branches = [s for s in plan.stages if s.kind == "chain" and s.name in ("a", "b")]
    assert [s.inputs for s in branches] == [(chain_p[0].id,), (chain_p[0].id,)]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: gen().key_by(key).to(state("s")), [True]),
        (lambda: gen().to(step("x")).to(state("s")), [False]),
        (lambda: gen().collect().to(state("s")), [False]),
        (lambda: gen().key_by(key).collect().to(state("s")), [False]),
        (lambda: gen().collect().key_by(key).to(state("s")), [True]),
        (lambda: gen().key_by(key).to(state("s1")).to(step("x")).to(state("s2")), [True, True]),
        (lambda: gen().key_by(key).to(state("s1")).collect().to(state("s2")), [True, False]),
    ],
)
def test_keyed_flag(make: Any, expected: list[bool]) -> None:
    plan = compile_plan(build(make().to_sink(sink())))
    assert [s.keyed for s in plan.stages if s.kind == "state"] == expected


# -- place --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [("w1",), ("w1", "w2"), W3])
@pytest.mark.parametrize("partitions", [DEFAULT_PARTITIONS, 10, 7])
def test_keyed_state_is_split_over_every_worker(workers: tuple[str, ...], partitions: int) -> None:
    app = word_count_app()
    plan = compile_plan(app)
    placement = place(plan, app, workers, partitions=partitions)
    replicas = [p for p in placement.placed if p.stage.kind == "state"]
    assert [p.worker for p in replicas] == list(workers)
    parts = [set(p.partitions) for p in replicas]
    assert set().union(*parts) == set(range(partitions))
    assert sum(len(p) for p in parts) == partitions  # disjoint
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    table = placement.owners["state3"]
    assert len(table) == partitions
    for p in replicas:
        assert all(table[i] == p.worker for i in p.partitions)


def test_placement_on_one_two_three_workers() -> None:
    app = word_count_app()
    plan = compile_plan(app)
    for workers in (("w1",), ("w1", "w2"), W3):
        placement = place(plan, app, workers)
        for w in workers:
            assert sorted(p.id for p in placement.on(w)) == [
                "router1",
                "sink4.0",
                "source0",
                "state3",
            ]
        assert placement.replica("router1", workers[-1]) is not None
        assert placement.replica("router1", "elsewhere") is None


def test_unkeyed_state_is_on_exactly_one_worker() -> None:
    app = build(gen().collect().to(state("s1")).to(state("s2")).to_sink(sink()))
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    states = [s for s in plan.stages if s.kind == "state"]
    assert [s.keyed for s in states] == [False, False]
    for s in states:
        replicas = [p for p in placement.placed if p.id == s.id]
        assert len(replicas) == 1
        assert replicas[0].partitions == (0,)
        assert placement.owners[s.id] == (replicas[0].worker,)
    # The generator runs on the first worker only, so its router does too; what follows
    # each state step runs on that state's worker: nothing idles without input.
    on = {s.id: sorted(p.worker for p in placement.placed if p.id == s.id) for s in plan.stages}
    first, second = (placement.owners[s.id][0] for s in states)
    assert on["source0"] == on["router1"] == ["w1"]
    assert on[plan.stages[3].id] == [first]  # the router before s2 follows s1
    assert on[next(s.id for s in plan.stages if s.kind == "sink")] == [second]


def test_fan_in_counts_the_senders_of_each_actor() -> None:
    app = word_count_app()
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    counts = fan_in(plan, placement)
    for p in placement.placed:
        want = {"source": 0, "router": 1, "state": 3, "sink": 1}[p.stage.kind]
        assert counts[(p.stage.id, p.worker)] == want, p


def test_generator_source_only_on_the_first_worker_tcp_source_on_all() -> None:
    app = build(gen("g").merge(tcp("t")).to(step("x")).to_sink(sink()))
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    assert [p.worker for p in placement.placed if p.id == "source0"] == ["w1"]
    assert [p.worker for p in placement.placed if p.id == "source1"] == list(W3)
    chosen = place(plan, app, W3, source_workers={"t": ["w2"], "g": ["w3"]})
    assert [p.worker for p in chosen.placed if p.id == "source0"] == ["w3"]
    assert [p.worker for p in chosen.placed if p.id == "source1"] == ["w2"]


def test_place_needs_a_worker() -> None:
    app = alphabet_app()
    with pytest.raises(ValueError):
        place(compile_plan(app), app, [])


# -- wire ---------------------------------------------------------------------------------


def test_router_route_has_one_target_per_partition_at_its_owner() -> None:
    app = alphabet_app()
    plan = compile_plan(app)
    placement = place(plan, app, W3, partitions=12)
    routes = wire(plan, placement, addresses(placement))
    for w in W3:
        (route,) = routes[("router1", w)]
        assert route.kind == "partitioned" and route.sink is None
        # 12 partitions over 3 workers: contiguous blocks of 4
        assert route.targets == tuple(f"state2@{W3[p // 4]}" for p in range(12))
    for p in placement.placed:
        if p.id == "state2":
            assert all(
                routes[("router1", "w1")][0].targets[i] == f"state2@{p.worker}"
                for i in p.partitions
            )


def test_routes_into_sinks_are_encoded_and_local() -> None:
    app = build(gen().key_by(key).to(state("s")).to_sinks([sink(1), sink(2)]))
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    routes = wire(plan, placement, addresses(placement))
    for w in W3:
        r1, r2 = routes[("state2", w)]
        assert (r1.kind, r1.targets, r1.sink) == ("encoded", (f"sink3.0@{w}",), (3, 0))
        assert (r2.kind, r2.targets, r2.sink) == ("encoded", (f"sink3.1@{w}",), (3, 1))
        assert routes[("sink3.0", w)] == ()
    (src,) = routes[("source0", "w1")]
    assert (src.kind, src.targets, src.sink) == ("records", ("router1@w1",), None)
    assert ("source0", "w2") not in routes


def test_unkeyed_state_route_has_one_target() -> None:
    app = build(gen().to(step("a")).collect().to(state("s")).to_sink(sink()))
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    routes = wire(plan, placement, addresses(placement))
    (owner,) = placement.owners["state3"]
    assert [w for w in W3 if ("router1", w) in routes] == ["w1"]  # where the generator is
    (route,) = routes[("router1", "w1")]
    assert (route.kind, route.targets) == ("partitioned", (f"state3@{owner}",))


def test_every_placed_actor_is_wired() -> None:
    app = word_count_app()
    plan = compile_plan(app)
    placement = place(plan, app, W3)
    routes = wire(plan, placement, addresses(placement))
    assert set(routes) == {(p.id, p.worker) for p in placement.placed}


# -- partitioning -------------------------------------------------------------------------


def test_partition_of_is_deterministic_and_in_range() -> None:
    for count in (1, 2, 7, DEFAULT_PARTITIONS, 1000):
        seen = set()
        for i in range(500):
            p = partition_of(f"key-{i}", count)
            assert 0 <= p < count
            assert partition_of(f"key-{i}", count) == p
            seen.add(p)
        assert seen == {0} if count == 1 else len(seen) > 1


def test_keys_of_one_value_hash_alike() -> None:
    assert partition_of("abc", 120) == partition_of(b"abc", 120)
    assert partition_of(42, 120) == partition_of("42", 120)
    assert partition_of(None, 120) == partition_of(b"", 120)


def test_keys_spread_evenly_over_three_workers() -> None:
    table = owners(DEFAULT_PARTITIONS, W3)
    counts = Counter(table[partition_of(f"word{i}", DEFAULT_PARTITIONS)] for i in range(10_000))
    assert set(counts) == set(W3)
    even = 10_000 / 3
    for w in W3:
        assert abs(counts[w] - even) <= 0.1 * even, counts


def test_owners_are_contiguous_equal_blocks() -> None:
    assert owners(6, ("a", "b", "c")) == ("a", "a", "b", "b", "c", "c")
    assert owners(4, ("a",)) == ("a",) * 4
    table = owners(10, ("a", "b", "c"))
    assert sorted(Counter(table).values()) == [3, 3, 4]
    firsts = [table.index(w) for w in ("a", "b", "c")]
    assert firsts == sorted(firsts)


def test_key_bytes() -> None:
    assert key_bytes("caf\u00e9") == b"caf\xc3\xa9"
    assert key_bytes(b"\x00\xff") == b"\x00\xff"
    assert key_bytes(1234) == b"1234"
    assert key_bytes(-5) == b"-5"
    assert key_bytes(None) == b""
    with pytest.raises(TypeError, match="float"):
        key_bytes(1.5)
    with pytest.raises(TypeError):
        partition_of(("a", 1), 10)
