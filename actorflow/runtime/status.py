"""The topology actor's status rounds: ``actorflow status`` asks every placed actor
for its figures and answers with the cluster's view and theirs.

A mixin of :class:`actorflow.runtime.topology.TopologyActor`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from actorflow.messages import ClusterStatus, StageStatus, StatusQuery
from actorflow.runtime.phases import Timer, TimerKind

STATUS_TIMEOUT = timedelta(seconds=2)


class StatusRounds:
    """Status handlers (see the module docstring)."""

    status_waiters: list
    status_replies: dict
    status_round: int
    request: Any
    state: Any
    addresses: dict
    membership: Any
    checkpoints: Any
    send: Any
    wakeupAfter: Any  # noqa: N815

    def on_status_query(self, sender: Any) -> None:
        if self.request is None:  # asked through a joiner's admin: no cluster here
            self.send(sender, ClusterStatus({"state": "not the initializer"}))
            return
        self.status_waiters.append(sender)
        if len(self.status_waiters) > 1:
            return  # a round is under way; it answers everyone
        if self.state != "running":
            self.answer_status()
            return
        self.status_round += 1
        self.status_replies = {}
        for addr in self.addresses.values():
            self.send(addr, StatusQuery())
        self.wakeupAfter(STATUS_TIMEOUT, Timer(TimerKind.STATUS, self.status_round))

    def on_stage_status(self, msg: StageStatus) -> None:
        self.status_replies[(msg.stage_id, msg.worker)] = {"kind": msg.kind, **msg.counters}
        if self.status_waiters and len(self.status_replies) == len(self.addresses):
            self.answer_status()

    def answer_status(self) -> None:
        waiters, self.status_waiters = self.status_waiters, []
        if not waiters:
            return
        names = self.membership.order or list(self.membership.members)
        status: dict[str, Any] = {
            "state": str(self.state),
            "processing_messages": self.state == "running",
            "worker_names": names,
            "worker_count": len(names),
            "expected_workers": self.request.worker_count if self.request else None,
            "cluster_id": self.cluster_id,
            "epoch": self.epoch,
            "last_checkpoint": self.checkpoints.completed,
            "lost_workers": sorted(self.membership.lost),
            "recoveries": self.recoveries,
            "records_possibly_lost": self.checkpoints.possibly_lost,
            "records_dropped_for_lost_workers": self.dropped_for_lost,
            "last_checkpoint_failure": self.checkpoints.failure,
            "table_version": self.table_version,
            "last_rescale": self.last_rescale,
            "rescale": None
            if self.rescale is None
            else {
                **self.rescale.report("under way", time.monotonic()),
                "step": str(self.rescale.step),
            },
        }
        if self.plan is not None and self.placement is not None:
            status.update(self.summary())
            status["actors"] = {
                f"{sid}@{w}": figures for (sid, w), figures in sorted(self.status_replies.items())
            }
            refusals: dict[str, int] = {}
            for (_, w), figures in self.status_replies.items():
                refusals[w] = max(refusals.get(w, 0), figures.get("messages_refused", 0))
            status["messages_refused"] = refusals
            missing = set(self.addresses) - set(self.status_replies)
            status["unanswered"] = sorted(f"{sid}@{w}" for sid, w in missing)
        for w in waiters:
            self.send(w, ClusterStatus(status))
