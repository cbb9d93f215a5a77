"""The checkpoint coordinator's bookkeeping, in process."""

from __future__ import annotations

from actorflow.runtime.checkpoints import CHECKPOINT_TIMEOUT, CheckpointCoordinator

SINKS = {("sink3", "worker1"), ("sink3", "worker2")}


def test_a_checkpoint_completes_when_every_sink_reached_it():
    c = CheckpointCoordinator()
    assert c.begin(now=0.0) == 1
    assert not c.reach("sink3", "worker1", 1, SINKS)
    assert not c.reach("sink3", "worker2", 0, SINKS), "an older checkpoint does not count"
    assert c.reach("sink3", "worker2", 1, SINKS)
    assert c.completed == 1 and c.pending is None
    assert c.begin(now=1.0) == 2


def test_an_overdue_checkpoint_is_abandoned_and_numbers_go_on():
    c = CheckpointCoordinator()
    c.begin(now=0.0)
    assert not c.overdue(now=CHECKPOINT_TIMEOUT - 1, every=0.3)
    assert c.overdue(now=CHECKPOINT_TIMEOUT + 1, every=0.3)
    assert not c.overdue(now=CHECKPOINT_TIMEOUT + 1, every=2.0), "ten periods at least"
    c.abandon("too slow")
    assert c.failure == "checkpoint 1: too slow" and c.completed == 0
    assert not c.reach("sink3", "worker1", 1, {("sink3", "worker1")}), "a late answer"
    assert c.begin(now=20.0) == 2


def test_a_restarted_initializer_numbers_above_its_files():
    c = CheckpointCoordinator()
    c.resume_from(7)
    assert c.begin(now=0.0) == 8


def test_plain_sender_loss_counts_what_dead_workers_took_since_the_checkpoint():
    c = CheckpointCoordinator()
    c.begin(now=0.0)
    c.note_progress("source0", "worker1", 1, 100)
    c.note_progress("source0", "worker2", 1, 40)
    c.reach("sink3", "worker1", 1, {("sink3", "worker1")})
    c.note_progress("source0", "worker2", 2, 90)  # checkpoint 2 never completes
    c.count_loss({"worker2"})
    assert c.possibly_lost == 90 - 40
    assert c.progress == {}
