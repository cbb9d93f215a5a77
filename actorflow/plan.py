"""Compile an Application into a plan, place the plan on workers, and wire it.

Three pure steps, each unit-testable without actors:

1. :func:`compile_plan` coalesces the app graph into plan stages, the actor
   kinds of the runtime: ``source``, ``chain`` (a run of stateless steps),
   ``router`` (the stateless steps right before a state step, then the
   partition router), ``state`` (one state computation, or one window step:
   window contents are keyed state too) and ``sink`` (one sink config). A
   state step ends a chain, as in Wallaroo's design.
2. :func:`place` decides which workers run which stage: sources on the
   workers that have them, keyed state spread over the workers by partition,
   unkeyed state on one worker, and chains, routers and sinks on every worker
   where their input is (records that leave a state step go on on its worker).
3. :func:`wire` turns actor addresses into each actor's outgoing routes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from actorflow.api import (
    Application,
    GenSourceConfig,
    StateComputation,
    TCPSourceConfig,
    WindowStep,
)
from actorflow.messages import Route
from actorflow.partitioning import DEFAULT_PARTITIONS, deal, holders, lane_id, owners


@dataclass(frozen=True)
class Settings:
    """Runtime knobs shared by every actor of a cluster."""

    batch_size: int = 4000  # records per batch, at most (see benchmarks: larger is faster)
    window: int = 4  # unacknowledged batches per link, at most
    partitions: int = DEFAULT_PARTITIONS  # per keyed state step
    state_actors: int = 1  # actors per worker for each keyed state step (its lanes)
    max_frame_size: int = 1 << 20  # a source closes a connection announcing more
    sink_buffer: int = 4 << 20  # bytes a sink holds while its receiver is away
    reconnect_max: float = 2.0  # seconds between sink reconnect attempts, at most
    error_log_limit: int = 20  # user errors logged in full per step; then every 1000th
    checkpoint_every: float = 1.0  # seconds between checkpoints; 0: none


@dataclass(frozen=True)
class PlanStage:
    """One actor kind in the plan; replicas of it are placed on workers."""

    id: str
    kind: str  # source | chain | router | state | sink
    name: str
    app_stages: tuple[int, ...]  # app stage ids this actor runs, in order
    inputs: tuple[str, ...] = ()
    sink_index: int = 0  # sink: which config of the sink stage
    keyed: bool = False  # state: partitioned by key, else a single instance
    lane: int = 0  # keyed state: which of the step's ``lanes`` actors per worker this is
    lanes: int = 1

    @property
    def group(self) -> str:
        """The state step's own id, shared by its lanes (owner tables are kept by it)."""
        return self.id.partition("~")[0] if self.lane else self.id


@dataclass(frozen=True)
class Plan:
    """The compiled app: plan stages in topological order."""

    app_name: str
    stages: tuple[PlanStage, ...]

    def stage(self, stage_id: str) -> PlanStage:
        for s in self.stages:
            if s.id == stage_id:
                return s
        raise KeyError(stage_id)

    def outputs(self, stage_id: str) -> list[PlanStage]:
        return [s for s in self.stages if stage_id in s.inputs]


def compile_plan(app: Application, state_actors: int = 1, parallel: bool = True) -> Plan:
    """Coalesce the app graph into plan stages; each partitioned state step gets
    ``state_actors`` lanes (plan stages ``stateN``, ``stateN~1``, ...), each placed on
    every owner worker with its share of that worker's partitions. ``parallel`` False:
    one stage per step whatever the sources' parallelism (the in-process runner)."""
    child_count = {s.id: 0 for s in app.stages}
    for s in app.stages:
        for p in s.parents:
            child_count[p] += 1
    stages: dict[str, PlanStage] = {}
    out: dict[int, list[str]] = {}  # app stage -> plan stages carrying its stream
    keyed: dict[int, bool] = {}

    def add(kind: str, first: int, name: str, inputs: list[str], **kw: Any) -> str:
        sid = f"{kind}{first}"
        stages[sid] = PlanStage(sid, kind, name, (first,), tuple(inputs), **kw)
        return sid

    def open_chain(parent: int) -> str | None:
        """The chain that parent's stream ends in, if nothing else reads it."""
        ids = out[parent]
        if len(ids) == 1 and stages[ids[0]].kind == "chain" and child_count[parent] == 1:
            return ids[0]
        return None

    for s in app.stages:
        parent = s.parents[0] if s.parents else None
        if s.kind == "source":
            out[s.id] = [add("source", s.id, s.name, [])]
            keyed[s.id] = False
        elif s.kind == "merge":
            out[s.id] = [x for p in s.parents for x in out[p]]
            keyed[s.id] = any(keyed[p] for p in s.parents)
        elif s.kind == "sink":
            for i, cfg in enumerate(s.spec):
                sid = f"sink{s.id}.{i}"
                stages[sid] = PlanStage(
                    sid, "sink", cfg.name, (s.id,), tuple(out[parent]), sink_index=i
                )
        elif s.kind == "to" and isinstance(s.spec, StateComputation | WindowStep):
            chain = open_chain(parent)
            if chain is not None:
                old = stages.pop(chain)
                router = "router" + chain.removeprefix("chain")
                stages[router] = replace(old, id=router, kind="router")
            else:
                router = add("router", s.id, f"route to {s.name}", out[parent])
                stages[router] = replace(stages[router], app_stages=())  # routes only
            keyed[s.id] = keyed[parent]
            state = add("state", s.id, s.name, [router], keyed=keyed[s.id])
            count = state_actors if keyed[s.id] else 1
            stages[state] = replace(stages[state], lanes=count)
            for lane in range(1, count):
                stages[lane_id(state, lane)] = replace(
                    stages[state], id=lane_id(state, lane), lane=lane
                )
            out[s.id] = [lane_id(state, lane) for lane in range(count)]
        else:  # a stateless step: to, key_by, collect
            keyed[s.id] = {"key_by": True, "collect": False}.get(s.kind, keyed[parent])
            chain = open_chain(parent)
            if chain is not None:
                c = stages[chain]
                stages[chain] = replace(
                    c, app_stages=(*c.app_stages, s.id), name=f"{c.name} | {s.name}"
                )
                out[s.id] = [chain]
            else:
                out[s.id] = [add("chain", s.id, s.name, out[parent])]
    if parallel:
        stages = _source_lanes(app, stages)
    return Plan(app.name, tuple(stages.values()))


def _source_lanes(app: Application, stages: dict[str, PlanStage]) -> dict[str, PlanStage]:
    """A TCP source with ``parallelism`` N feeds N actors of the chain or router that
    reads it, on each worker (lanes ``routerN``, ``routerN~1``, ...): each connection's
    records go to one of them, so per-key order holds per connection, as before."""
    out: dict[str, PlanStage] = {}
    lanes: dict[str, list[str]] = {}
    for sid, st in stages.items():
        out[sid] = st
        if st.kind not in ("chain", "router") or len(st.inputs) != 1:
            continue
        src = stages[st.inputs[0]]
        spec = app.stage(src.app_stages[0]).spec[1] if src.kind == "source" else None
        count = spec.parallelism if isinstance(spec, TCPSourceConfig) else 1
        if count > 1:
            out[sid] = replace(st, lanes=count)
            for lane in range(1, count):
                out[lane_id(sid, lane)] = replace(st, id=lane_id(sid, lane), lane=lane, lanes=count)
            lanes[sid] = [lane_id(sid, lane) for lane in range(count)]
    for sid, st in out.items():  # what reads a stage with lanes reads every lane
        if any(i in lanes for i in st.inputs):
            inputs = tuple(x for i in st.inputs for x in lanes.get(i, [i]))
            out[sid] = replace(st, inputs=inputs)
    return out


@dataclass(frozen=True)
class PlacedStage:
    """A replica of a plan stage on one worker."""

    stage: PlanStage
    worker: str
    partitions: tuple[int, ...] = ()  # state: the partitions this replica owns

    @property
    def id(self) -> str:
        return self.stage.id


@dataclass(frozen=True)
class Placement:
    """Which worker runs which replica, and who owns each partition of each state step."""

    workers: tuple[str, ...]
    placed: tuple[PlacedStage, ...]
    owners: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def on(self, worker: str) -> list[PlacedStage]:
        """The actor group of one worker."""
        return [p for p in self.placed if p.worker == worker]

    def replica(self, stage_id: str, worker: str) -> PlacedStage | None:
        for p in self.placed:
            if p.stage.id == stage_id and p.worker == worker:
                return p
        return None


def place(
    plan: Plan,
    app: Application,
    workers: Sequence[str],
    source_workers: Mapping[str, Sequence[str]] | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    tables: Mapping[str, tuple[str, ...]] | None = None,
) -> Placement:
    """Place every plan stage on workers.

    ``source_workers[name]`` lists the workers that run the source called
    ``name`` (by default every worker for a TCP source, the first worker for a
    generator source). ``tables[stage id]`` is a state step's owner table where one
    exists already (after a rescale: :func:`actorflow.partitioning.rebalance`); the
    others get contiguous blocks.
    """
    workers = tuple(workers)
    if not workers:
        raise ValueError("place() needs at least one worker")
    placed: list[PlacedStage] = []
    part_owners: dict[str, tuple[str, ...]] = {}
    present: dict[str, set[str]] = {}  # stage id -> workers with a replica
    unkeyed = 0
    for st in plan.stages:
        fed = set().union(*(present[i] for i in st.inputs)) if st.inputs else set()
        if st.kind == "source":
            spec = app.stage(st.app_stages[0]).spec[1]
            default = workers[:1] if isinstance(spec, GenSourceConfig) else workers
            on = set((source_workers or {}).get(st.name, default))
            placed += [PlacedStage(st, w) for w in workers if w in on]
        elif st.kind == "state" and st.lane:  # the lanes of a step share its table
            table = part_owners[st.group]
            on = set()
            for w in workers:
                mine = deal([p for p, o in enumerate(table) if o == w], st.lanes, st.lane)
                if mine and fed:
                    placed.append(PlacedStage(st, w, mine))
                    on.add(w)
        elif st.kind == "state":
            given = (tables or {}).get(st.id)
            if given is not None and set(given) <= set(workers):
                table = tuple(given)
                unkeyed += 0 if st.keyed else 1
            elif st.keyed:
                table = owners(partitions, workers)
            else:
                table = (workers[unkeyed % len(workers)],)
                unkeyed += 1
            part_owners[st.id] = table
            on = set()
            for w in workers:
                mine = deal([p for p, o in enumerate(table) if o == w], st.lanes, 0)
                if mine and fed:  # routers anywhere reach every owner
                    placed.append(PlacedStage(st, w, mine))
                    on.add(w)
        else:  # chains, routers and sinks run where their input is
            on = fed
            placed += [PlacedStage(st, w) for w in workers if w in on]
        present[st.id] = on
    return Placement(workers, tuple(placed), part_owners)


def wire(
    plan: Plan, placement: Placement, addresses: Mapping[tuple[str, str], Any]
) -> dict[tuple[str, str], tuple[Route, ...]]:
    """Each placed actor's routes, given ``addresses[(stage id, worker)]``."""
    routes: dict[tuple[str, str], tuple[Route, ...]] = {}
    for p in placement.placed:
        mine = []
        for nxt in plan.outputs(p.stage.id):
            if nxt.kind == "state":
                if nxt.lane:
                    continue  # one route to all the lanes of the step, with lane 0
                table = placement.owners[nxt.id]
                held = holders(table, nxt.lanes)
                targets = tuple(
                    addresses[(lane_id(nxt.id, held[i][1]), w)] for i, w in enumerate(table)
                )
                mine.append(Route("partitioned", targets, workers=tuple(table)))
            elif nxt.kind == "sink":
                target = (addresses[(nxt.id, p.worker)],)
                mine.append(Route("encoded", target, (nxt.app_stages[0], nxt.sink_index)))
            elif nxt.lanes > 1:  # a source's lanes: one route to all of them, with lane 0
                if not nxt.lane:
                    ids = [lane_id(nxt.id, lane) for lane in range(nxt.lanes)]
                    mine.append(Route("lanes", tuple(addresses[(i, p.worker)] for i in ids)))
            else:
                mine.append(Route("records", (addresses[(nxt.id, p.worker)],)))
        routes[(p.stage.id, p.worker)] = tuple(mine)
    return routes


def fan_in(plan: Plan, placement: Placement) -> dict[tuple[str, str], int]:
    """How many placed actors send to each placed actor (barriers align over them)."""
    counts = {(p.stage.id, p.worker): 0 for p in placement.placed}
    for p in placement.placed:
        for nxt in plan.outputs(p.stage.id):
            if nxt.kind == "state":
                for w in set(placement.owners[nxt.group]):
                    if (nxt.id, w) in counts:
                        counts[(nxt.id, w)] += 1
            elif (nxt.id, p.worker) in counts:
                counts[(nxt.id, p.worker)] += 1
    return counts


def describe(plan: Plan, placement: Placement) -> dict[str, Any]:
    """A JSON-able summary: the stages and what runs where."""
    return {
        "app": plan.app_name,
        "stages": [
            {"id": s.id, "kind": s.kind, "name": s.name, "inputs": list(s.inputs)}
            for s in plan.stages
        ],
        "workers": {
            w: [
                {
                    "stage": p.stage.id,
                    "kind": p.stage.kind,
                    "partitions": len(p.partitions),
                    "partition_ranges": ranges(p.partitions),
                }
                for p in placement.on(w)
            ]
            for w in placement.workers
        },
    }


def ranges(numbers: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` as ``"0-2,5"``."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and int(out[-1].split("-")[-1]) == n - 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)
