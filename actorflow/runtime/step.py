"""Computation actors: coalesced stateless chains, partition routers and state steps."""

from __future__ import annotations

from actorflow.api import StateComputation
from actorflow.runtime.stage import StageActor
from actorflow.runtime.steps import ErrorLog, KeyedState, run_ops, stateless_ops


class ChainActor(StageActor):
    """Runs a chain of stateless steps (and key_by / collect) on each batch."""

    kind = "chain"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        self.ops, logs = stateless_ops(
            self.app, self.config.stage.stage.app_stages, self.config.settings.error_log_limit
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
    """Runs one state computation for the partitions this worker owns."""

    kind = "state"

    def setup(self) -> None:
        assert self.app is not None and self.config is not None
        st = self.app.stage(self.config.stage.stage.app_stages[0])
        assert isinstance(st.spec, StateComputation)
        errors = ErrorLog(st.name, self.config.settings.error_log_limit)
        self.error_logs.append(errors)
        self.state = KeyedState(st.spec, errors)

    def process(self, records: list) -> list:
        return self.state.apply(records)

    def counters(self) -> dict:
        c = super().counters()
        c["keys"] = len(self.state.states) if hasattr(self, "state") else 0
        c["partitions"] = len(self.config.stage.partitions) if self.config else 0
        return c
