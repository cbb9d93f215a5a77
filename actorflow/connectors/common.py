"""Logic the shipped connectors share (the Kafka ones, untested, use only this and the
tested client library)."""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable
from typing import Any


class PendingAcks:
    """What to acknowledge upstream (a RabbitMQ delivery tag, Kafka offsets) once the
    cluster acknowledges the message id that carried it: upstream forgets a message
    only after a completed checkpoint covers it."""

    def __init__(self) -> None:
        self.pending: deque[tuple[int, Any]] = deque()

    def add(self, message_id: int, token: Any) -> None:
        self.pending.append((message_id, token))

    def acked(self, point: int) -> list[Any]:
        """The tokens of every message up to ``point``, oldest first."""
        out = []
        while self.pending and self.pending[0][0] <= point:
            out.append(self.pending.popleft()[1])
        return out


def latest_per_partition(tokens: list[tuple[Any, int]]) -> dict[Any, int]:
    """Kafka: the offset to commit per partition (one past the last acknowledged)."""
    out: dict[Any, int] = {}
    for partition, offset in tokens:
        out[partition] = max(out.get(partition, -1), offset + 1)
    return out


def main(run: Callable[[], None]) -> None:
    """Run a connector script: log to stderr, exit quietly on Ctrl-C."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        run()
    except KeyboardInterrupt:
        pass
