"""Keyed state by partition: what a checkpoint stores, and where a restore finds it.

A state actor holds its keys in one dict (the per-record path stays one lookup)
and a checkpoint writes that dict as it is (no hashing per checkpoint). A restore
splits it by partition, so that after a grow or shrink each partition's state can
go to its new owner: the new owner of partition p reads p from the snapshot of the
worker that owned p at the checkpoint it restores (its own file, or that worker's
guard, which reads its file for it).

What a restore takes is ``{"format": 2, "partitions": {p: {key: state}}, **extra}``;
a step's scalars (a window step's watermark and closed time) travel in ``extra``.
A file holds a plain ``{key: state}`` (a window step: its keys under ``"keys"``),
split with the step's partition count when read; a format-2 dict is taken as is.

>>> index = PartitionIndex(4)
>>> snap = snapshot({"a": 1, "b": 2, "c": 3}, index)
>>> sorted(merge([pick(snap, range(4))]))
['a', 'b', 'c']
>>> sum(len(keys) for keys in snap["partitions"].values())
3
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from actorflow.partitioning import holders, partition_of

FORMAT = 2


class PartitionIndex:
    """``of(key)``: the key's partition among ``count``, remembered (MD5 once per key)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.known: dict[Any, int] = {}

    def of(self, key: Any) -> int:
        p = self.known.get(key)
        if p is None:
            p = self.known[key] = partition_of(key, self.count) if self.count > 1 else 0
        return p

    def forget(self, keys: Iterable[Any]) -> None:
        for key in keys:
            self.known.pop(key, None)


def split(keyed: Mapping[Any, Any], index: PartitionIndex) -> dict[int, dict[Any, Any]]:
    """``{partition: {key: value}}`` of ``keyed``."""
    parts: dict[int, dict[Any, Any]] = {}
    if len(index.known) > 2 * len(keyed) + 10_000:  # keys gone since: keep the cache small
        index.known = {k: p for k, p in index.known.items() if k in keyed}
    of = index.of
    for key, value in keyed.items():
        p = of(key)
        part = parts.get(p)
        if part is None:
            part = parts[p] = {}
        part[key] = value
    return parts


def snapshot(keyed: Mapping[Any, Any], index: PartitionIndex, **extra: Any) -> dict:
    """What a checkpoint writes for one state actor."""
    return {"format": FORMAT, "partitions": split(keyed, index), **extra}


def pick(
    data: dict,
    partitions: Iterable[int],
    index: PartitionIndex | None = None,
    keyed_in: str | None = None,
) -> dict:
    """The part of a snapshot that holds ``partitions`` (a format-1 snapshot is split by
    ``index`` first; see :func:`upgrade` for ``keyed_in``)."""
    wanted = set(partitions)
    if data.get("format") != FORMAT:
        if index is None:
            msg = "a snapshot of format 1 needs the partition count to be split"
            raise ValueError(msg)
        data = upgrade(data, index, keyed_in)
    parts = {p: keys for p, keys in data["partitions"].items() if p in wanted}
    rest = {k: v for k, v in data.items() if k != "partitions"}
    return {**rest, "partitions": parts}


def upgrade(data: dict, index: PartitionIndex, keyed_in: str | None = None) -> dict:
    """A format-1 snapshot (``{key: state}``, or a dict with the keys under ``keyed_in``)
    as format 2."""
    if keyed_in is not None and keyed_in in data:
        rest = {k: v for k, v in data.items() if k != keyed_in}
        return snapshot(data[keyed_in], index, **rest)
    return snapshot(data, index)


def merge(parts: Iterable[dict]) -> dict[Any, Any]:
    """All keys of several snapshot parts, as one dict."""
    keyed: dict[Any, Any] = {}
    for data in parts:
        for keys in data["partitions"].values():
            keyed.update(keys)
    return keyed


def drop(keyed: dict[Any, Any], index: PartitionIndex, partitions: Iterable[int]) -> int:
    """Remove the keys of ``partitions`` (a partition handed to another owner); how many."""
    gone = set(partitions)
    keys = [k for k in keyed if index.of(k) in gone]
    for k in keys:
        del keyed[k]
    index.forget(keys)
    return len(keys)


def restore_sources(
    partitions: Sequence[int], table: Sequence[str] | None, me: str, lanes: int = 1
) -> list[tuple[tuple[str, int], tuple[int, ...]]]:
    """``[((worker, lane), partitions)]``: whose snapshot holds each of ``partitions``,
    by the owner table in force at the checkpoint restored, each worker running
    ``lanes`` state actors of the step (None: this worker's own file has them).

    >>> restore_sources([0, 1, 2, 3], ("a", "b", "a", "a"), "c", lanes=2)
    [(('a', 0), (0, 3)), (('b', 0), (1,)), (('a', 1), (2,))]
    """
    if not table:
        return [((me, 0), tuple(partitions))]
    held = holders(table, lanes)
    found: dict[tuple[str, int], list[int]] = {}
    for p in partitions:
        found.setdefault(held[p] if p < len(table) else (me, 0), []).append(p)
    return [(where, tuple(ps)) for where, ps in found.items()]
