"""Grow and shrink: the steps of a rescale, as plain bookkeeping for the topology actor.

A rescale goes through three steps, all driven by the topology actor:

1. **cut**: once the joining workers' admins are there and no other checkpoint is
   under way, a *holding* checkpoint: a consistent cut of every state and source
   offset, after whose barrier the sources take nothing more, so nothing after the
   cut goes into the old placement;
2. **move**: go to placement N+1, the same rollout that recovery uses, on the new
   worker list and owner tables (:func:`actorflow.partitioning.rebalance`, the
   fewest partitions moved), except that the staying workers' sources are kept,
   with their connections, and only rewired. Each state actor loads its partitions
   from the cut, from the snapshot of whichever worker owned them; the sources go on
   from where they held, so no record is lost or replayed and per-key order holds;
3. **settle**: a checkpoint of the new layout; then the cluster files of every
   worker describe the new cluster, and leaving workers remove theirs and stop.

A fault in the middle leaves the old layout or the new one: a joining worker lost
before the settle checkpoint is dropped and the old layout placed again (from the
cut); any other lost worker is waited for, as in recovery, and the move goes on.

>>> r = Rescale("grow", ["w1", "w2"], ["w1", "w2", "w3"], after=4, asked_at=0.0)
>>> r.joining, r.leaving
(('w3',), ())
>>> tables = r.plan_tables({"count": ("w1",) * 6 + ("w2",) * 6})
>>> sorted(tables["count"].count(w) for w in ("w1", "w2", "w3")), r.partitions_moved
([4, 4, 4], 4)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from actorflow.partitioning import moved, rebalance


class Step(StrEnum):
    CUT = "cut"  # waiting for a checkpoint after the request
    MOVE = "move"  # placement N+1 is being rolled out
    SETTLE = "settle"  # waiting for a checkpoint of the new layout


@dataclass
class Rescale:
    """One grow or shrink under way."""

    kind: str  # "grow" or "shrink"
    old_order: list[str]
    new_order: list[str]
    after: int  # the last completed checkpoint when asked: the cut is a later one
    asked_at: float
    waiter: Any = None  # who asked (the shrink command), answered when done
    step: Step = Step.CUT
    hold_at: int = 0  # the holding checkpoint started for the cut (0: not yet)
    cut: int = 0
    old_tables: dict[str, tuple[str, ...]] = field(default_factory=dict)
    moves: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    moving_at: float = 0.0
    ready_at: float = 0.0

    @property
    def joining(self) -> tuple[str, ...]:
        return tuple(w for w in self.new_order if w not in self.old_order)

    @property
    def leaving(self) -> tuple[str, ...]:
        return tuple(w for w in self.old_order if w not in self.new_order)

    @property
    def partitions_moved(self) -> int:
        return sum(len(m) for m in self.moves.values())

    def plan_tables(self, tables: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """The owner tables of the new layout; remembers the old ones and the moves."""
        self.old_tables = dict(tables)
        new = {sid: rebalance(table, self.new_order) for sid, table in tables.items()}
        self.moves = {sid: moved(tables[sid], new[sid]) for sid in new}
        return new

    def report(self, outcome: str, now: float) -> dict[str, Any]:
        """What ``actorflow status`` shows of this rescale (``last_rescale``)."""
        pause = (self.ready_at or now) - self.moving_at if self.moving_at else 0.0
        moves: dict[str, int] = {}
        for table in self.moves.values():
            for src, dst in table.values():
                moves[f"{src}->{dst}"] = moves.get(f"{src}->{dst}", 0) + 1
        return {
            "kind": self.kind,
            "outcome": outcome,
            "workers_before": list(self.old_order),
            "workers_after": list(self.new_order),
            "cut_checkpoint": self.cut,
            "partitions_moved": self.partitions_moved,
            "moves": dict(sorted(moves.items())),
            "pause_seconds": round(max(pause, 0.0), 3),
            "took_seconds": round(now - self.asked_at, 3),
        }


def shrink_leavers(
    order: Sequence[str], initializer: str, workers: Sequence[str], count: int
) -> tuple[tuple[str, ...], str | None]:
    """The workers a shrink removes, or why it cannot: (leavers, error).

    >>> shrink_leavers(["init", "w2", "w3"], "init", [], 1)
    (('w3',), None)
    >>> shrink_leavers(["init", "w2"], "init", ["init"], 0)[1]
    "the initializer 'init' cannot leave: it holds the cluster's control channel"
    """
    if workers and count:
        return (), "give the leaving workers by name or by count, not both"
    if count:
        candidates = [w for w in order if w != initializer]
        if count > len(candidates):
            return (), (
                f"--count {count}: only {len(candidates)} worker(s) besides the initializer "
                f"{initializer!r} can leave"
            )
        return tuple(candidates[-count:]), None
    if not workers:
        return (), "name the workers that leave (--workers) or how many (--count)"
    unknown = [w for w in workers if w not in order]
    if unknown:
        return (), (
            f"no worker {', '.join(map(repr, unknown))} in this cluster "
            f"(its workers: {', '.join(order)})"
        )
    if initializer in workers:
        return (), (
            f"the initializer {initializer!r} cannot leave: it holds the cluster's control channel"
        )
    if len(set(workers)) >= len(order):
        return (), "the last worker cannot leave"
    return tuple(w for w in order if w in workers), None


def grow_refusal(
    name: str,
    worker_count: int,
    order: Sequence[str],
    running: bool,
    busy: bool,
    checkpoints: bool,
) -> str | None:
    """Why a worker started with --join cannot grow the cluster now, or None."""
    if not running:
        return (
            "the cluster is not running: --join adds a worker to a running cluster "
            "(start the cluster's first workers with --control)"
        )
    if name in order:
        return f"worker name {name!r} is already taken in this cluster"
    if busy:
        return "a grow or shrink is under way; start this worker again once it is done"
    if not checkpoints:
        return (
            "this cluster runs without checkpoints (--time-between-checkpoints 0): a grow "
            "moves state at a checkpoint"
        )
    if worker_count != len(order) + 1:
        return (
            f"--worker-count {worker_count}: a worker that joins a running cluster of "
            f"{len(order)} gives the size after it joins, {len(order) + 1}"
        )
    return None
