"""The same apps in Bytewax, in one process, for ``actorflow bench``'s side-by-side figures.

Bytewax (0.21, the ``bench`` extra) is what a Python user would pick instead, so it is
the baseline to beat: the same decode, key, running total (alphabet) or split and
count (word count), encode, on the same generated data, with ``run_main`` (one worker,
no sockets). Missing Bytewax is not an error: :func:`available` says why.
"""

from __future__ import annotations

import struct
import time
from typing import Any

_VOTE = struct.Struct(">sI")
BATCH = 4000  # items per input batch, as actorflow's --batch-size (Bytewax's default is 1)


def available() -> str | None:
    """None if Bytewax can be used, else why not."""
    try:
        import bytewax  # noqa: F401
        from bytewax.testing import run_main  # noqa: F401
    except ImportError as exc:
        return f"Bytewax is not installed ({exc}; pip install 'actorflow[bench]')"
    return None


def _run(flow_builder: Any) -> tuple[float, list]:
    from bytewax.testing import run_main

    out: list = []
    flow = flow_builder(out)
    started = time.perf_counter()
    run_main(flow)
    return time.perf_counter() - started, out


def alphabet(frames: list[bytes]) -> tuple[float, list[bytes]]:
    """Seconds to run alphabet over ``frames`` (framed votes), and its outputs."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource

    def decode(frame: bytes) -> tuple[str, int]:
        letter, votes = _VOTE.unpack_from(frame, 4)
        return (letter.decode(), votes)

    def add(total: int | None, vote: tuple[str, int]) -> tuple[int, tuple[str, int]]:
        total = (total or 0) + vote[1]
        return total, (vote[0], total)

    def encode(item: tuple[str, tuple[str, int]]) -> bytes:
        line = f"{item[1][0]} => {item[1][1]}\n".encode()
        return struct.pack(">I", len(line)) + line

    def build(out: list) -> Any:
        flow = Dataflow("alphabet")
        source = op.input("in", flow, TestingSource(frames, batch_size=BATCH))
        votes = op.map("decode", source, decode)
        keyed = op.key_on("letter", votes, lambda v: v[0])
        totals = op.stateful_map("add votes", keyed, add)
        op.output("out", op.map("encode", totals, encode), TestingSink(out))
        return flow

    return _run(build)


def word_count(frames: list[bytes]) -> tuple[float, list[bytes]]:
    """Seconds to count the words of ``frames`` (one framed text line each), and its
    outputs."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource

    from actorflow.examples.word_count import split  # the app's own splitting

    def decode(frame: bytes) -> str:
        return frame[4:].decode()

    def count(n: int | None, _word: str) -> tuple[int, int]:
        n = (n or 0) + 1
        return n, n

    def encode(item: tuple[str, int]) -> bytes:
        line = f"{item[0]} => {item[1]}\n".encode()
        return struct.pack(">I", len(line)) + line

    def build(out: list) -> Any:
        flow = Dataflow("word_count")
        source = op.input("in", flow, TestingSource(frames, batch_size=BATCH))
        text = op.map("decode", source, decode)
        words = op.flat_map("split", text, split.func)
        keyed = op.key_on("word", words, lambda w: w)
        counts = op.stateful_map("count", keyed, count)
        op.output("out", op.map("encode", counts, encode), TestingSink(out))
        return flow

    return _run(build)
