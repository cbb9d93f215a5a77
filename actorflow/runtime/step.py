"""Computation actors: coalesced stateless chains, partition routers and state steps."""

from __future__ import annotations

import logging
from typing import Any

from actorflow.api import StateComputation, WindowStep
from actorflow.messages import (
    Configure,
    Configured,
    FetchPartitions,
    PartitionData,
    PartitionSource,
)
from actorflow.partitioning import lane_id
from actorflow.resilience import checkpoint_file, read_snapshot, write_snapshot
from actorflow.runtime.partitions import PartitionIndex, merge, pick
from actorflow.runtime.stage import StageActor
from actorflow.runtime.steps import ErrorLog, KeyedState, run_ops, stateless_ops
from actorflow.runtime.windows import Windows, windows_for

log = logging.getLogger("actorflow.state")

KEY_SAMPLE = 50  # keys a status report lists per state actor


class ChainActor(StageActor):
    """Runs a chain of stateless steps (and key_by / collect) on each batch."""

    kind = "chain"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        self.ops, logs = stateless_ops(
            self.app,
            self.config.stage.stage.app_stages,
            self.config.settings.error_log_limit,
            self.timed,
        )
        self.error_logs.extend(logs)

    def process(self, records: list) -> list:
        return run_ops(self.ops, records)


class RouterActor(ChainActor):
    """Runs the stateless steps before a state step, then sends each key to its owner.

    Its only route is partitioned: the plan gives it, per partition, the state
    actor that owns it.
    """

    kind = "router"


class StateActor(StageActor):
    """Runs one state computation, or one window step, for the partitions this worker owns.

    At each checkpoint barrier it writes its per-key state (for a window step: the
    open windows and how far they have fired) to the resilience folder (atomically,
    before the barrier goes on). A new placement restores it from the last completed
    checkpoint: each partition from the snapshot of the worker that owned it then
    (after a grow or shrink, another worker's, fetched through that worker's guard),
    and answers Configured once it has them all.
    """

    kind = "state"
    keyed_in: str | None = None  # where a window step's snapshot keeps its keys

    def configure(self, cfg: Configure) -> Configured | None:
        self.fetching: dict[tuple[str, str], PartitionSource] = {}  # (worker, lane) asked
        self.restored: list[dict] = []
        reply = super().configure(cfg)
        if reply.error is None and self.fetching:
            self.pending_reply: Configured = reply
            return None  # sent when the other workers' parts arrive
        return reply

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        st = self.app.stage(self.config.stage.stage.app_stages[0])
        assert isinstance(st.spec, StateComputation | WindowStep)
        errors = ErrorLog(st.name, self.config.settings.error_log_limit)
        self.error_logs.append(errors)
        self.windows: Windows | None = None
        if isinstance(st.spec, WindowStep):
            self.windows = windows_for(st.spec, errors)
            self.keyed_in = "keys"
        else:
            self.state = KeyedState(st.spec, errors, self.timed)
        cfg = self.config
        self.index = PartitionIndex(cfg.settings.partitions if cfg.stage.stage.keyed else 1)
        files, restore = cfg.files, cfg.restore
        if not restore or files is None:
            return
        mine = cfg.stage.partitions
        for src in cfg.restore_from or (PartitionSource(cfg.worker, None, files, mine),):
            stage = src.stage_id or self.stage_id  # the lane whose snapshot holds them
            if src.worker == cfg.worker:
                path = checkpoint_file(files.snapshot(stage, restore), restore)
                data = read_snapshot(path)
                self.restored.append(pick(data, src.partitions, self.index, self.keyed_in))
            else:
                self.fetching[(src.worker, stage)] = src
                ask = FetchPartitions(
                    stage,
                    restore,
                    src.files,
                    src.partitions,
                    self.index.count,
                    self.keyed_in,
                    cfg.epoch,
                )
                self.send(src.guard, ask)
        if not self.fetching:
            self.finish_restore()

    def on_other(self, msg: Any, sender: Any) -> None:
        if not isinstance(msg, PartitionData) or msg.epoch != self.epoch:
            return super().on_other(msg, sender)
        if (msg.worker, msg.stage_id) not in self.fetching or self.config is None:
            return None
        if msg.error or msg.data is None:
            error = f"restoring from worker {msg.worker!r}: {msg.error}"
            self.fetching = {}
            self.send(
                self.config.coordinator,
                Configured(self.stage_id, self.config.worker, error, self.epoch),
            )
            return None
        del self.fetching[(msg.worker, msg.stage_id)]
        self.restored.append(msg.data)
        if not self.fetching:
            self.finish_restore()
            self.send(self.config.coordinator, self.pending_reply)
        return None

    def finish_restore(self) -> None:
        """Take the restored partitions' keys (and a window step's times) as this step's."""
        assert self.config is not None
        parts, self.restored = self.restored, []
        keyed = merge(parts)
        if self.windows is not None:
            closed = max((p["closed"] for p in parts if "closed" in p), default=None)
            if closed is not None:
                self.windows.restore({"closed": closed, "keys": keyed})
            marks = [p["watermark"] for p in parts if "watermark" in p]
            self.watermark.value = max([self.watermark.value, *marks])
        else:
            self.state.states = keyed
        moved = sum(
            len(s.partitions) for s in self.config.restore_from if s.worker != self.config.worker
        )
        log.info(
            "%s: restored %d keys of %d partitions from checkpoint %d%s",
            self.name,
            len(keyed),
            len(self.config.stage.partitions),
            self.config.restore,
            f" ({moved} partitions from other workers)" if moved else "",
        )

    def keyed(self) -> dict:
        if getattr(self, "windows", None) is not None:
            return self.windows.keys  # type: ignore[union-attr]
        return self.state.states if hasattr(self, "state") else {}

    def checkpoint(self, checkpoint: int) -> None:
        files = self.config.files if self.config else None
        if files is not None:
            # Written as held: a reader splits it by partition (partitions.pick), so a
            # checkpoint costs no hashing of keys.
            if self.windows is not None:
                data = {**self.windows.snapshot(), "watermark": self.watermark.value}
            else:
                data = self.state.states
            write_snapshot(files.snapshot(self.stage_id, checkpoint), data)

    def on_checkpoint_done(self, checkpoint: int) -> None:
        if self.config is None or self.config.files is None:
            return
        stage = self.config.stage.stage
        self.config.files.forget_before(self.stage_id, checkpoint)
        if stage.lanes > 1 and stage.lane == 0:
            # A lane that a grow or shrink left without partitions is not placed: its
            # older snapshots, never read again, go with the first lane's.
            for lane in range(1, stage.lanes):
                self.config.files.forget_before(lane_id(stage.group, lane), checkpoint)

    def process(self, records: list) -> list:
        if self.windows is not None:
            return self.windows.apply(records)
        return self.state.apply(records)

    def on_watermark(self, watermark: int) -> list:
        return self.windows.advance(watermark) if self.windows is not None else []

    def output_watermark(self) -> int | None:
        out = self.watermark.out
        if self.windows is None or out is None or out < 0:
            return out
        return self.windows.output_watermark()

    def counters(self) -> dict:
        c = super().counters()
        states = self.keyed()
        c["keys"] = len(states)
        c["key_sample"] = sorted(str(k) for k in list(states)[:KEY_SAMPLE])
        c["partitions"] = len(self.config.stage.partitions) if self.config else 0
        if getattr(self, "windows", None) is not None:
            c.update(self.windows.counters())  # type: ignore[union-attr]
        return c
