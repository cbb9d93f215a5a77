"""The checkpoint coordinator's bookkeeping: which checkpoint is under way, which sinks
reached it, when it is complete or abandoned, and what plain senders may lose.

Plain state for the topology actor (no actor, no I/O), tested in process. One
checkpoint at a time: sources start it with a barrier, every sink reports it once
everything before the barrier is written, and then it is complete.
"""

from __future__ import annotations

CHECKPOINT_TIMEOUT = 10.0  # seconds (at least) before an unfinished checkpoint is abandoned


class CheckpointCoordinator:
    """Checkpoint numbers, the one under way, and loss accounting."""

    def __init__(self) -> None:
        self.completed = 0  # the last completed checkpoint: a rollback goes there
        self.next = 0
        self.pending: int | None = None  # the checkpoint under way
        self.pending_since = 0.0
        self.reached: set[tuple[str, str]] = set()  # (stage, worker) of sinks that reached it
        # per source: plain-sender records taken by each checkpoint started since the last
        # completed one (what a dead worker's sources took after it is lost, at least)
        self.progress: dict[tuple[str, str], dict[int, int]] = {}
        self.possibly_lost = 0
        self.failure = ""  # why the last abandoned checkpoint was abandoned

    def resume_from(self, checkpoint: int) -> None:
        """A restarted initializer goes on from its files' last completed checkpoint."""
        self.completed = self.next = checkpoint

    def begin(self, now: float) -> int:
        """Number a new checkpoint and wait for it."""
        self.next = max(self.next, self.completed) + 1
        self.pending, self.pending_since = self.next, now
        self.reached = set()
        return self.pending

    def cancel(self) -> None:
        """The placement changes: whatever was under way will never complete."""
        self.pending = None
        self.reached = set()

    def overdue(self, now: float, every: float) -> bool:
        """True if the checkpoint under way has taken too long (a receiver away?)."""
        limit = max(CHECKPOINT_TIMEOUT, 10 * every)
        return self.pending is not None and now - self.pending_since > limit

    def abandon(self, why: str) -> None:
        self.failure = f"checkpoint {self.pending}: {why}"
        self.pending = None

    def reach(self, stage: str, worker: str, checkpoint: int, sinks: set) -> bool:
        """A sink reached ``checkpoint``; True if that completes it."""
        if checkpoint != self.pending:
            return False
        self.reached.add((stage, worker))
        if not sinks <= self.reached:
            return False
        self.completed, self.pending = checkpoint, None
        for seen in self.progress.values():
            for old in [c for c in seen if c < checkpoint]:
                del seen[old]
        return True

    def note_progress(self, stage: str, worker: str, checkpoint: int, unreplayable: int) -> None:
        """A source's count of plain-sender records at a barrier."""
        if checkpoint >= self.completed:
            self.progress.setdefault((stage, worker), {})[checkpoint] = unreplayable

    def count_loss(self, dead_workers: set[str]) -> None:
        """Plain-sender records that sources on dead workers took after the checkpoint we
        roll back to (a lower bound: what came after their last barrier is unknown)."""
        for (_, worker), seen in self.progress.items():
            if worker in dead_workers and seen:
                self.possibly_lost += max(seen.values()) - seen.get(self.completed, 0)
        self.progress = {}
