"""Keys to partitions, partitions to workers.

A key hashes (MD5, as in Wallaroo) to a point in a 64-bit hash space; the
space is split into ``count`` equal ranges, the partitions. A cluster starts with
the partitions spread over the workers in contiguous, equal blocks
(:func:`owners`); when workers join or leave, :func:`rebalance` moves as few
partitions as an even spread allows, so a grow or shrink moves the least state.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import md5
from typing import Any

DEFAULT_PARTITIONS = 120  # divisible by 1-6, 8, 10 and 12 workers


def key_bytes(key: Any) -> bytes:
    """The bytes a key hashes by: str as UTF-8, bytes as is, int as its decimal text."""
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes):
        return key
    if key is None:
        return b""
    if isinstance(key, int):
        return str(key).encode()
    msg = f"a key must be str, bytes or int; got {type(key).__name__}"
    raise TypeError(msg)


def partition_of(key: Any, count: int) -> int:
    """The partition (0 .. count-1) that owns ``key``."""
    h = int.from_bytes(md5(key_bytes(key)).digest()[:8], "big")
    return (h * count) >> 64


def owners(count: int, workers: Sequence[str]) -> tuple[str, ...]:
    """``owners(count, workers)[p]`` is the worker that owns partition p."""
    n = len(workers)
    return tuple(workers[p * n // count] for p in range(count))


def rebalance(table: Sequence[str], workers: Sequence[str]) -> tuple[str, ...]:
    """A new owner table for ``workers`` that moves as few partitions of ``table`` as
    possible while every worker ends with ``count // n`` or one more.

    Workers that keep their place keep their partitions up to their new share; those
    that leave, and those above their share, hand over their highest-numbered ones.

    >>> old = owners(120, ["w1", "w2"])
    >>> new = rebalance(old, ["w1", "w2", "w3"])
    >>> len(moved(old, new)), new.count("w3")
    (40, 40)
    """
    if not workers:
        raise ValueError("rebalance() needs at least one worker")
    count, n = len(table), len(workers)
    base, extra = divmod(count, n)
    held = {w: [p for p, o in enumerate(table) if o == w] for w in workers}
    # The workers that get one more than the base share are those holding most now.
    ranked = sorted(workers, key=lambda w: (-len(held[w]), workers.index(w)))
    quota = {w: base + (1 if i < extra else 0) for i, w in enumerate(ranked)}
    new = list(table)
    free = [p for p, o in enumerate(table) if o not in quota]
    for w in workers:
        free += held[w][quota[w] :]
    free.sort(reverse=True)
    for w in workers:
        for _ in range(quota[w] - min(len(held[w]), quota[w])):
            new[free.pop()] = w
    return tuple(new)


def moved(old: Sequence[str], new: Sequence[str]) -> dict[int, tuple[str, str]]:
    """``{partition: (old owner, new owner)}`` for the partitions that change owner."""
    return {p: (a, b) for p, (a, b) in enumerate(zip(old, new, strict=True)) if a != b}


def lane_id(stage_id: str, lane: int) -> str:
    """The plan stage id of lane ``lane`` of a partitioned state step (lane 0: the step's
    own id).

    >>> lane_id("state3", 0), lane_id("state3", 2)
    ('state3', 'state3~2')
    """
    return stage_id if lane == 0 else f"{stage_id}~{lane}"


def deal(partitions: Sequence[int], lanes: int, lane: int) -> tuple[int, ...]:
    """The partitions of one worker that its state actor ``lane`` of ``lanes`` holds:
    dealt in turn, so each lane has its share, whatever the worker owns.

    >>> deal((7, 1, 4, 9, 2), 2, 0), deal((7, 1, 4, 9, 2), 2, 1)
    ((1, 4, 9), (2, 7))
    """
    return tuple(sorted(partitions)[lane::lanes])


def holders(table: Sequence[str], lanes: int) -> dict[int, tuple[str, int]]:
    """``{partition: (worker, lane)}``: which state actor holds each partition of an
    owner table, when each worker runs ``lanes`` of them.

    >>> sorted(holders(("a", "b", "a", "a"), 2).items())
    [(0, ('a', 0)), (1, ('b', 0)), (2, ('a', 1)), (3, ('a', 0))]
    """
    mine: dict[str, list[int]] = {}
    for p, w in enumerate(table):
        mine.setdefault(w, []).append(p)
    found: dict[int, tuple[str, int]] = {}
    for w, parts in mine.items():
        for lane in range(lanes):
            for p in deal(parts, lanes, lane):
                found[p] = (w, lane)
    return found
