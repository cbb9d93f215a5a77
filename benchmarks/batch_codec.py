"""Pickle (protocol 5) vs msgpack for the record batches actors send each other.

actorflow moves records between actors in batches (see actorflow/messages.py); this
script backs the choice of pickle for those batches. For batches of 1000 records of
three kinds -- (str, int) tuples, lists of str, and small objects of an app's own class --
it times dumps and loads with each codec and prints records per second, the encoded
size, and which codec is faster. msgpack cannot encode objects of arbitrary classes at
all (it needs a hand-written `default=` hook per class, and gives back dicts, not the
objects), and it gives tuples back as lists unless told otherwise.

Run: python benchmarks/batch_codec.py [--records 1000] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import pickle
import random
import string
import sys
import time
from collections.abc import Callable
from typing import Any

import msgpack

PROTOCOL = 5


class Vote:
    """A small app-defined record, like the objects user computations return."""

    __slots__ = ("letter", "votes")

    def __init__(self, letter: str, votes: int) -> None:
        self.letter = letter
        self.votes = votes

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vote) and other.letter == self.letter and other.votes == self.votes


def batches(n: int, seed: int = 1) -> dict[str, list[Any]]:
    rng = random.Random(seed)
    words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    return {
        "(str, int) tuples": [(rng.choice(words), rng.randint(0, 1 << 20)) for _ in range(n)],
        "lists of str": [rng.choices(words, k=rng.randint(3, 8)) for _ in range(n)],
        "small objects": [
            Vote(rng.choice(string.ascii_lowercase), rng.randint(1, 10)) for _ in range(n)
        ],
    }


def rate(fn: Callable[[], Any], records: int, seconds: float) -> float:
    """Records per second of `fn` (which handles `records` records), best of 5 timed rounds."""
    loops = 1
    while True:  # calibrate: enough loops for about seconds/5 per round
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        took = time.perf_counter() - start
        if took >= seconds / 5:
            break
        loops *= 2
    best = took
    for _ in range(4):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, time.perf_counter() - start)
    return records * loops / best


def codecs() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    return {
        "pickle5": (
            lambda obj: pickle.dumps(obj, protocol=PROTOCOL),
            pickle.loads,
        ),
        "msgpack": (
            msgpack.packb,
            lambda data: msgpack.unpackb(data, use_list=False),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=1000, help="records per batch (default 1000)")
    p.add_argument("--seconds", type=float, default=0.5, help="time per measurement (default 0.5)")
    args = p.parse_args(argv)
    n = args.records
    print(
        f"python {sys.version.split()[0]}, msgpack {'.'.join(map(str, msgpack.version))}, "
        f"pickle protocol {PROTOCOL}; "
        f"batches of {n} records; records/s, best of 5"
    )
    print()
    header = (
        f"{'batch':<20}{'codec':<9}{'dumps rec/s':>14}{'loads rec/s':>14}{'bytes':>9}  round trip"
    )
    print(header)
    print("-" * len(header))
    verdicts = []
    for kind, batch in batches(n).items():
        results: dict[str, tuple[float, float]] = {}
        for name, (dumps, loads) in codecs().items():
            try:
                data = dumps(batch)
            except TypeError as exc:
                print(f"{kind:<20}{name:<9}{'cannot encode: ' + str(exc):>37}")
                continue
            back = loads(data)
            same = list(back) == batch
            note = "same" if same else f"differs ({type(back[0]).__name__} back)"
            d = rate(lambda dumps=dumps, batch=batch: dumps(batch), n, args.seconds)
            ld = rate(lambda loads=loads, data=data: loads(data), n, args.seconds)
            results[name] = (d, ld)
            print(f"{kind:<20}{name:<9}{d:>14,.0f}{ld:>14,.0f}{len(data):>9,}  {note}")
        if len(results) == 2:
            (a, (ad, al)), (b, (bd, bl)) = results.items()
            fd = a if ad >= bd else b
            fl = a if al >= bl else b
            verdicts.append(
                f"{kind}: dumps {fd} faster ({max(ad, bd) / min(ad, bd):.2f}x), "
                f"loads {fl} faster ({max(al, bl) / min(al, bl):.2f}x)"
            )
        else:
            verdicts.append(f"{kind}: only {', '.join(results)} can encode these")
    print()
    for line in verdicts:
        print(line)
    print(
        "\nmsgpack gives (str, int) tuples back only with use_list=False (which turns every "
        "list into a tuple), and cannot encode an app's own classes without a hand-written "
        "hook per class; pickle round-trips all three exactly."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
