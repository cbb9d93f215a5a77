"""Keys to partitions, partitions to workers.

A key hashes (MD5, as in Wallaroo) to a point in a 64-bit hash space; the
space is split into ``count`` equal ranges, the partitions. Partitions are
spread over the workers in contiguous, equal blocks, so every key is owned by
exactly one worker and the split stays even as workers are added.
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
