"""Tuning of Python's cyclic garbage collector for the actors on the data path.

Every record is a few tuples. With the default thresholds (a young collection every
700 allocations) the collector walks the records of every batch, and those held in an
outlet's buffer are promoted until a full collection walks the whole heap: about a
third of a router's time went to it. Records are freed by reference counting as
soon as a batch is sent, so a young collection every 100,000 allocations sees almost
none of them, while cyclic garbage is still collected (a full collection comes after
some 500 million allocations, minutes of full load). What exists once an actor is
configured (its modules, its app, Thespian) is frozen out of every collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 100_000  # allocations between young collections (default 700)
MIDDLE_THRESHOLD = 50  # young collections between middle ones (default 10)
OLD_THRESHOLD = 100  # middle collections between full ones (default 10)


def tune_collector() -> tuple[int, int, int]:
    """Freeze what this process holds now and space collections out; returns the
    previous thresholds.

    >>> import gc
    >>> before = tune_collector()
    >>> gc.get_threshold()
    (100000, 50, 100)
    >>> gc.set_threshold(*before); gc.unfreeze()
    """
    before = gc.get_threshold()
    gc.collect()  # what is garbage now is not frozen with the rest
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    return before
