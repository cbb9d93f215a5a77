"""Computation actors: coalesced stateless chains, partition routers and state steps."""

from __future__ import annotations

import logging

from actorflow.api import StateComputation, WindowStep
from actorflow.resilience import checkpoint_file, read_snapshot, write_snapshot
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
    before the barrier goes on); a new placement restores it from the last completed
    checkpoint.
    """

    kind = "state"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        st = self.app.stage(self.config.stage.stage.app_stages[0])
        assert isinstance(st.spec, StateComputation | WindowStep)
        errors = ErrorLog(st.name, self.config.settings.error_log_limit)
        self.error_logs.append(errors)
        self.windows: Windows | None = None
        if isinstance(st.spec, WindowStep):
            self.windows = windows_for(st.spec, errors)
        else:
            self.state = KeyedState(st.spec, errors, self.timed)
        files, restore = self.config.files, self.config.restore
        if restore and files is not None:
            path = checkpoint_file(files.snapshot(self.stage_id, restore), restore)
            data = read_snapshot(path)
            if self.windows is not None:
                self.windows.restore(data)
                self.watermark.value = max(self.watermark.value, data.get("watermark", -1))
            else:
                self.state.states = data
            log.info(
                "%s: restored %d keys from checkpoint %d",
                self.name,
                len(self.keyed()),
                restore,
            )

    def keyed(self) -> dict:
        if getattr(self, "windows", None) is not None:
            return self.windows.keys  # type: ignore[union-attr]
        return self.state.states if hasattr(self, "state") else {}

    def checkpoint(self, checkpoint: int) -> None:
        files = self.config.files if self.config else None
        if files is not None:
            if self.windows is not None:
                data = {**self.windows.snapshot(), "watermark": self.watermark.value}
            else:
                data = self.state.states
            write_snapshot(files.snapshot(self.stage_id, checkpoint), data)

    def on_checkpoint_done(self, checkpoint: int) -> None:
        if self.config is not None and self.config.files is not None:
            self.config.files.forget_before(self.stage_id, checkpoint)

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
