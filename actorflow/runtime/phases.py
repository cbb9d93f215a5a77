"""What the topology actor is doing, and the timers it sets: typed, not bare strings."""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple


class Phase(StrEnum):
    """What the topology actor is doing (``actorflow status`` shows it as ``state``)."""

    IDLE = "idle"
    GATHERING = "gathering"  # waiting for --worker-count workers
    RETIRING = "retiring"  # the old placement's actors close their sockets
    CONFIGURING = "configuring"  # the new placement's actors load state and wire up
    STARTING = "starting"  # sources start listening
    RUNNING = "running"
    RECOVERING = "recovering"  # waiting for lost workers to come back
    STOPPING = "stopping"
    FAILED = "failed"


PLACED = (Phase.RUNNING, Phase.RECOVERING, Phase.RETIRING, Phase.CONFIGURING, Phase.STARTING)


class TimerKind(StrEnum):
    STATUS = "status"  # a status round's answers are due
    RETIRE = "retire"  # old actors that did not answer Retire are given up
    CHECKPOINT = "checkpoint"  # the next checkpoint is due
    HEARTBEAT = "heartbeat"
    PLACING = "placing"  # a placement that did not complete


class Timer(NamedTuple):
    """A wakeup's payload: ``round`` tells a current timer from a stale one."""

    kind: TimerKind
    round: int
