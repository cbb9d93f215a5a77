"""Grow and shrink, in process: owner tables that move the fewest partitions, state
snapshots split and merged by partition, and the topology actor's rescale driven
through its messages with a fake send and a fake clock (no processes, no sockets)."""

from __future__ import annotations

import doctest
import itertools

import pytest

from actorflow import partitioning
from actorflow.messages import (
    BuildCluster,
    CheckpointReached,
    ClusterChanged,
    ClusterFigures,
    ClusterReady,
    Configure,
    Configured,
    JoinCluster,
    JoinRefused,
    LeaveCluster,
    Retire,
    Retired,
    ShrinkCluster,
    ShrinkDone,
    SourceStarted,
    StartCheckpoint,
    StartSource,
    Unhold,
    WorkerInfo,
)
from actorflow.partitioning import moved, owners, rebalance
from actorflow.plan import Settings
from actorflow.runtime import autoscale, partitions
from actorflow.runtime.autoscale import shrink_leavers
from actorflow.runtime.partitions import (
    PartitionIndex,
    drop,
    merge,
    pick,
    restore_sources,
    snapshot,
)
from actorflow.runtime.topology import Phase
from tests.conftest import ROOT
from tests.test_liveness import FakeTopology, clock  # noqa: F401  (the fixture)

# ---- owner tables ----------------------------------------------------------------


def least_moves(table: tuple[str, ...], workers: list[str]) -> int:
    """The fewest partitions any even table for ``workers`` must take from ``table``:
    each staying worker keeps at most its share, the best shares going to those that
    hold most (computed here by trying every choice of who gets the extra one)."""
    count, n = len(table), len(workers)
    base, extra = divmod(count, n)
    held = {w: table.count(w) for w in workers}
    best = count
    for lucky in itertools.combinations(workers, extra):
        kept = sum(min(held[w], base + (w in lucky)) for w in workers)
        best = min(best, count - kept)
    return best


@pytest.mark.parametrize("count", [120, 7, 64])
@pytest.mark.parametrize(
    "before,after",
    [(1, 2), (2, 3), (3, 4), (4, 5), (3, 2), (5, 4), (5, 2), (2, 1), (1, 6)],
)
def test_rebalance_is_even_and_moves_the_fewest_partitions(count, before, after):
    names = [f"w{i}" for i in range(1, 7)]
    old = owners(count, names[:before])
    # Grow by adding workers at the end; shrink by removing some in the middle.
    workers = names[:after] if after >= before else names[: after - 1] + [names[before - 1]]
    new = rebalance(old, workers)
    shares = sorted(new.count(w) for w in workers)
    assert shares[-1] - shares[0] <= 1 and sum(shares) == count
    assert set(new) <= set(workers)
    assert len(moved(old, new)) == least_moves(old, workers)
    # The figures: 120 partitions, one worker more each step.
    if count == 120 and after == before + 1:
        assert len(moved(old, new)) == {2: 60, 3: 40, 4: 30, 5: 24}[after]


def test_rebalance_of_a_rebalanced_table_keeps_moving_little():
    table = owners(120, ["a", "b"])
    for workers in (["a", "b", "c"], ["a", "b", "c", "d"], ["a", "c", "d"], ["a", "d"]):
        new = rebalance(table, workers)
        assert len(moved(table, new)) == least_moves(table, workers)
        table = new
    assert rebalance(table, ["a", "d"]) == table, "nothing to move: nothing moves"


# ---- state by partition --------------------------------------------------------


def test_a_snapshot_splits_by_partition_and_any_owner_takes_its_part():
    index = PartitionIndex(120)
    keyed = {f"key{i}": i for i in range(1_000)}
    snap = snapshot(keyed, index, watermark=7)
    assert snap["watermark"] == 7
    for p, keys in snap["partitions"].items():
        assert all(partitioning.partition_of(k, 120) == p for k in keys)
    # Two new owners share the partitions: together they hold every key once.
    table = rebalance(owners(120, ["w1"]), ["w1", "w2"])
    parts = [pick(snap, [p for p, o in enumerate(table) if o == w]) for w in ("w1", "w2")]
    mine = [merge([part]) for part in parts]
    assert not set(mine[0]) & set(mine[1])
    assert {**mine[0], **mine[1]} == keyed


def test_a_format_one_snapshot_is_split_when_asked():
    index = PartitionIndex(8)
    flat = {"a": 1, "b": 2, "c": 3}
    assert merge([pick(flat, range(8), index)]) == flat
    windows = {"closed": 5, "keys": flat}
    part = pick(windows, range(8), index, keyed_in="keys")
    assert part["closed"] == 5 and merge([part]) == flat
    with pytest.raises(ValueError, match="partition count"):
        pick(flat, range(8))


def test_drop_removes_one_partition_only():
    index = PartitionIndex(4)
    keyed = {f"k{i}": i for i in range(100)}
    gone = {k for k in keyed if index.of(k) == 2}
    assert drop(keyed, index, [2]) == len(gone) > 0
    assert not gone & set(keyed) and len(keyed) == 100 - len(gone)


def test_restore_sources_name_the_owner_at_the_checkpoint():
    table = ("w1", "w1", "w2", "w2")
    assert dict(restore_sources((1, 2, 3), table, "w3")) == {("w1", 0): (1,), ("w2", 0): (2, 3)}
    assert dict(restore_sources((0, 1), None, "w1")) == {("w1", 0): (0, 1)}


def test_who_leaves_in_a_shrink():
    order = ["init", "w2", "w3", "w4"]
    assert shrink_leavers(order, "init", [], 2) == (("w3", "w4"), None)
    assert shrink_leavers(order, "init", ["w4", "w2"], 0) == (("w2", "w4"), None)
    assert "cannot leave" in shrink_leavers(order, "init", ["init"], 0)[1]
    assert "no worker 'w9'" in shrink_leavers(order, "init", ["w9"], 0)[1]
    assert "only 3 worker(s)" in shrink_leavers(order, "init", [], 4)[1]
    assert "name the workers" in shrink_leavers(order, "init", [], 0)[1]


def test_the_docstring_examples_run():
    for module in (partitioning, partitions, autoscale):
        failed, tried = doctest.testmod(module)
        assert tried and not failed, module.__name__


# ---- the topology actor's rescale, in process ------------------------------------

APP = str(ROOT / "apps" / "alphabet.py")


def worker(name: str, port: int) -> WorkerInfo:
    args = ("--in", f"alphabet@127.0.0.1:{port}", "--out", "127.0.0.1:9")
    return WorkerInfo(name, f"uid-{name}", args, f"127.0.0.1:{port + 1}", guard=f"guard-{name}")


class Harness(FakeTopology):
    """The topology actor with fake actor creation; it answers for the stages."""

    myAddress = "topology"  # noqa: N815

    def __init__(self) -> None:
        super().__init__()
        self.made = 0

    def createActor(self, cls, targetActorRequirements=None, globalName=None):  # noqa: N802, D102
        self.made += 1
        return f"{cls.__name__}#{self.made}@{targetActorRequirements['worker_uid']}"

    def answer_configure(self) -> list[Configure]:
        got = [m for _, m in self.take(Configure)]
        for cfg in got:
            self.dispatch(Configured(cfg.stage.stage.id, cfg.worker, None, cfg.epoch), None)
        return got

    def answer_start(self) -> None:
        for target, _ in self.take(StartSource):
            ((sid, w),) = [k for k, a in self.addresses.items() if a == target]
            self.dispatch(SourceStarted(sid, w, "127.0.0.1:1", None, self.epoch), None)

    def answer_retire(self) -> int:
        asked = self.take(Retire)
        for sid, w in sorted(self.retiring):
            self.dispatch(Retired(sid, w), None)
        return len(asked)

    def complete_checkpoint(self, hold: bool = False) -> int:
        starts = self.take(StartCheckpoint)
        assert starts, "no checkpoint was started"
        n = starts[0][1].checkpoint
        assert all(m.hold == hold for _, m in starts), "hold" if hold else "no hold"
        for sid, w in list(self.addresses):
            if sid.startswith("sink"):
                self.dispatch(CheckpointReached(n, self.epoch, sid, w), None)
        return n

    def placed(self) -> list[Configure]:
        """Configure, Configured, StartSource, SourceStarted: the placement is running."""
        cfgs = self.answer_configure()
        self.answer_start()
        assert self.state == Phase.RUNNING
        return cfgs


@pytest.fixture
def cluster(clock):  # noqa: F811
    """A running two-worker alphabet cluster, its first checkpoint done."""
    t = Harness()
    w1, w2 = worker("w1", 20000), worker("w2", 20010)
    t.request = BuildCluster(APP, w1, 2, Settings(checkpoint_every=1.0), None)
    m = t.membership
    m.initializer = "w1"
    m.members = {"w1": w1, "w2": w2}
    m.registered = {w1.uid: "w1", w2.uid: "w2"}
    m.order = ["w1", "w2"]
    m.answered = {"w1": clock.now, "w2": clock.now}
    t.state = Phase.GATHERING
    t.place_all()
    t.placed()
    t.start_checkpoint()
    assert t.complete_checkpoint() == 1 and t.checkpoints.completed == 1
    t.sent.clear()
    return t


def state_configs(cfgs: list[Configure]) -> dict[str, Configure]:
    return {c.worker: c for c in cfgs if c.stage.stage.kind == "state"}


def test_a_grow_checkpoints_then_moves_partitions_with_their_state(cluster, clock):  # noqa: F811
    t = cluster
    before = dict(t.tables)
    w3 = worker("w3", 20020)
    t.dispatch(JoinCluster(w3, 3, t.request.settings, grow=True), "joiner")
    assert not t.take(JoinRefused) and t.rescale is not None
    assert not t.take(StartCheckpoint), "the cut waits for the joiner's admin"
    t.membership.registered[w3.uid] = "w3"
    t.advance_rescale()
    assert not t.take(Retire), "nothing moves before the cut"
    sources = {k: a for k, a in t.addresses.items() if k[0].startswith("source")}
    cut = t.complete_checkpoint(hold=True)
    retired = {to for to, _ in t.sent if isinstance(_, Retire)}
    assert retired and not retired & set(sources.values()), "staying sources are kept"
    assert t.answer_retire() > 0 and t.state == Phase.CONFIGURING
    cfgs = t.placed()
    kept = {(c.stage.stage.id, c.worker): c.keep for c in cfgs if c.stage.stage.kind == "source"}
    assert kept == {**{k: True for k in sources}, ("source0", "w3"): False}, kept
    assert all(t.addresses[k] == a for k, a in sources.items())
    assert t.epoch == 2 and t.table_version == 1
    (sid,) = before
    assert len(moved(before[sid], t.tables[sid])) == 40
    # The joiner's state actor restores its 40 partitions from the two old owners'
    # snapshots at the cut; the old owners keep the rest from their own.
    states = state_configs(cfgs)
    new = {s.worker: s.partitions for s in states["w3"].restore_from}
    assert sorted(new) == ["w1", "w2"] and sum(map(len, new.values())) == 40
    assert all(before[sid][p] == w for w, ps in new.items() for p in ps)
    assert {s.worker for s in states["w1"].restore_from} == {"w1"}
    assert all(c.restore == cut for c in cfgs if c.stage.stage.kind == "state")
    sources = [c for c in cfgs if c.stage.stage.kind == "source"]
    assert {c.worker: c.restore for c in sources} == {"w1": cut, "w2": cut, "w3": 0}
    assert ("joiner", ClusterReady) in [(to, type(m)) for to, m in t.sent]
    t.addresses[("reporter", "w1")] = "reporter-w1"  # as with --metrics
    # A checkpoint of the new layout settles it: every worker's file learns of w3.
    t.complete_checkpoint()
    ((to, figures),) = t.take(ClusterFigures)
    assert to == "reporter-w1" and figures.figures["rescales"] == 1
    assert figures.figures["table_version"] == 1
    changed = t.take(ClusterChanged)
    assert sorted(to for to, _ in changed) == ["guard-w1", "guard-w2", "guard-w3"]
    assert len(changed[0][1].workers) == 3
    assert t.rescale is None and t.last_rescale["outcome"] == "done"
    assert t.last_rescale["partitions_moved"] == 40
    assert t.checkpoint_tables == t.tables


def test_a_grow_is_refused_with_the_reason(cluster):
    t = cluster
    w3 = worker("w3", 20020)
    t.dispatch(JoinCluster(w3, 4, t.request.settings, grow=True), "joiner")
    ((_, refused),) = t.take(JoinRefused)
    assert "gives the size after it joins, 3" in refused.reason
    t.dispatch(JoinCluster(worker("w2", 20030), 3, t.request.settings, grow=True), "joiner")
    ((_, refused),) = t.take(JoinRefused)
    assert "already taken" in refused.reason


def test_a_joiner_lost_during_the_move_puts_the_old_layout_back(cluster, clock):  # noqa: F811
    t = cluster
    before = dict(t.tables)
    w3 = worker("w3", 20020)
    t.dispatch(JoinCluster(w3, 3, t.request.settings, grow=True), "joiner")
    t.membership.registered[w3.uid] = "w3"
    t.advance_rescale()
    t.complete_checkpoint(hold=True)
    t.answer_retire()
    t.take(Configure)  # the joiner's actors never answer: it died
    clock.now += 4.0
    t.membership.answered["w1"] = t.membership.answered["w2"] = clock.now
    t.heartbeat()
    assert t.rescale is None and t.last_rescale["outcome"].startswith("abandoned")
    assert t.membership.order == ["w1", "w2"] and t.tables == before
    t.answer_retire()
    cfgs = t.placed()
    assert {c.worker for c in cfgs} == {"w1", "w2"}
    assert all(c.restore == 2 for c in cfgs if c.stage.stage.kind == "state")
    assert not any(c.keep for c in cfgs), "a recovery keeps no actor"


def test_a_shrink_hands_partitions_over_then_the_leaver_goes(cluster):
    t = cluster
    t.dispatch(ShrinkCluster(("w1",)), "cmd")
    ((_, done),) = t.take(ShrinkDone)
    assert "cannot leave" in done.error and t.rescale is None
    t.dispatch(ShrinkCluster(count=1), "cmd")
    cut = t.complete_checkpoint(hold=True)
    t.answer_retire()
    cfgs = t.placed()
    (sid,) = t.tables
    assert set(t.tables[sid]) == {"w1"}
    (w1_state,) = [c for c in cfgs if c.stage.stage.kind == "state"]
    assert {s.worker: len(s.partitions) for s in w1_state.restore_from} == {"w1": 60, "w2": 60}
    assert w1_state.restore == cut
    assert not t.take(LeaveCluster), "the leaver stays until the new layout has a checkpoint"
    t.complete_checkpoint()
    ((to, _),) = t.take(LeaveCluster)
    assert to == "guard-w2" and "w2" not in t.membership.members
    ((to, done),) = t.take(ShrinkDone)
    assert to == "cmd" and done.left == ("w2",) and done.workers == ("w1",)


def test_an_abandoned_cut_lets_the_holding_sources_go(cluster):
    t = cluster
    w3 = worker("w3", 20020)
    t.membership.registered[w3.uid] = "w3"
    t.dispatch(JoinCluster(w3, 3, t.request.settings, grow=True), "joiner")
    ((_, start), *_) = t.take(StartCheckpoint)
    assert start.hold
    t.abandon_checkpoint("a receiver away")
    assert t.rescale is None and "abandoned" in t.last_rescale["outcome"]
    unheld = t.take(Unhold)
    assert len(unheld) == 2 and t.take(JoinRefused)


def test_a_grow_whose_joiner_never_registers_is_given_up(cluster, clock):  # noqa: F811
    t = cluster
    w3 = worker("w3", 20020)
    t.dispatch(JoinCluster(w3, 3, t.request.settings, grow=True), "joiner")
    assert not t.take(StartCheckpoint), "no cut while w3's admin is not in the convention"
    assert t.rescale is not None and t.rescale.step == "cut" and not t.take(Retire)
    clock.now += 31
    t.check_rescale(clock.now)
    ((to, refused),) = t.take(JoinRefused)
    assert to == "joiner" and "did not register" in refused.reason
    assert t.rescale is None and t.membership.order == ["w1", "w2"]
    assert "w3" not in t.membership.members and t.epoch == 1
