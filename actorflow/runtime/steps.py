"""User functions applied to batches, with error accounting.

Each app stage becomes a function ``list[(key, value)] -> list[(key, value)]``; in an
app with windows, ``list[(key, value, event time)]`` the same way (``timed``): a
record keeps its event time through every step up to its window.
A user function that raises on a record does not stop anything: the error is
logged with the step's name, the key and the exception, counted, and the
record is skipped.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from actorflow.api import Application, Computation, StateComputation

log = logging.getLogger("actorflow.step")

Records = list
Op = Callable[[Records], Records]


class ErrorLog:
    """Counts a step's user errors; logs the first ``limit`` in full, then every 1000th."""

    def __init__(self, step: str, limit: int = 20) -> None:
        self.step = step
        self.limit = limit
        self.count = 0

    def report(self, exc: BaseException, key: Any, value: Any) -> None:
        self.count += 1
        if self.count <= self.limit or self.count % 1000 == 0:
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            log.error(
                "step %r: user function raised on key %r, record %.200r skipped "
                "(%d errors so far): %s",
                self.step,
                key,
                value,
                self.count,
                detail,
            )


def _stateless(comp: Computation, errors: ErrorLog, timed: bool = False) -> Op:
    func = comp.func
    if timed:
        return _stateless_timed(comp, errors)

    if comp.multi:

        def run_multi(records: Records) -> Records:
            out: Records = []
            extend = out.extend
            for key, value in records:
                try:
                    results = func(value)
                except Exception as exc:
                    errors.report(exc, key, value)
                    continue
                if results:
                    extend([(key, r) for r in results if r is not None])
            return out

        return run_multi

    def run(records: Records) -> Records:
        out: Records = []
        append = out.append
        for key, value in records:
            try:
                result = func(value)
            except Exception as exc:
                errors.report(exc, key, value)
                continue
            if result is not None:
                append((key, result))
        return out

    return run


def _stateless_timed(comp: Computation, errors: ErrorLog) -> Op:
    func, multi = comp.func, comp.multi

    def run(records: Records) -> Records:
        out: Records = []
        append = out.append
        for key, value, ts in records:
            try:
                result = func(value)
            except Exception as exc:
                errors.report(exc, key, value)
                continue
            if multi:
                if result:
                    out.extend([(key, r, ts) for r in result if r is not None])
            elif result is not None:
                append((key, result, ts))
        return out

    return run


def _key_by(extract: Callable[[Any], Any], errors: ErrorLog, timed: bool = False) -> Op:
    if timed:

        def run_timed(records: Records) -> Records:
            out: Records = []
            append = out.append
            for key, value, ts in records:
                try:
                    append((extract(value), value, ts))
                except Exception as exc:
                    errors.report(exc, key, value)
            return out

        return run_timed

    def run(records: Records) -> Records:
        out: Records = []
        append = out.append
        for key, value in records:
            try:
                append((extract(value), value))
            except Exception as exc:
                errors.report(exc, key, value)
        return out

    return run


def _collect(records: Records) -> Records:
    return [(None, value) for _, value in records]


def _collect_timed(records: Records) -> Records:
    return [(None, value, ts) for _, value, ts in records]


def stateless_ops(
    app: Application, stage_ids: tuple[int, ...], limit: int, timed: bool = False
) -> tuple[list[Op], list[ErrorLog]]:
    """The ops of a chain (stateless steps, key_by, collect), in order."""
    ops: list[Op] = []
    logs: list[ErrorLog] = []
    for sid in stage_ids:
        st = app.stage(sid)
        errors = ErrorLog(st.name, limit)
        if st.kind == "key_by":
            ops.append(_key_by(st.spec.func, errors, timed))
        elif st.kind == "collect":
            ops.append(_collect_timed if timed else _collect)
        elif st.kind == "to" and isinstance(st.spec, Computation):
            ops.append(_stateless(st.spec, errors, timed))
        else:
            msg = f"stage {st.name!r} ({st.kind}) cannot run in a stateless chain"
            raise ValueError(msg)
        logs.append(errors)
    return ops, logs


def run_ops(ops: list[Op], records: Records) -> Records:
    for op in ops:
        if not records:
            break
        records = op(records)
    return records


class KeyedState:
    """The state of one state step on one worker: one state object per key, made on first use."""

    def __init__(self, comp: StateComputation, errors: ErrorLog, timed: bool = False) -> None:
        self.comp = comp
        self.errors = errors
        self.states: dict[Any, Any] = {}
        if timed:
            self.apply = self.apply_timed  # type: ignore[method-assign]

    def apply_timed(self, records: Records) -> Records:
        """As :meth:`apply`, for (key, value, event time): outputs keep the input's time."""
        states, func, make, errors = self.states, self.comp.func, self.comp.state_class, self.errors
        multi = self.comp.multi
        out: Records = []
        for key, value, ts in records:
            state = states.get(key)
            if state is None and key not in states:
                try:
                    state = states[key] = make()
                except Exception as exc:
                    errors.report(exc, key, value)
                    continue
            try:
                result = func(value, state)
            except Exception as exc:
                errors.report(exc, key, value)
                continue
            if result is None:
                continue
            if multi:
                out.extend([(key, r, ts) for r in result if r is not None])
            else:
                out.append((key, result, ts))
        return out

    def apply(self, records: Records) -> Records:
        states = self.states
        func = self.comp.func
        make = self.comp.state_class
        errors = self.errors
        out: Records = []
        append = out.append
        extend = out.extend
        multi = self.comp.multi
        for key, value in records:
            try:
                state = states[key]
            except KeyError:
                try:
                    state = states[key] = make()
                except Exception as exc:
                    errors.report(exc, key, value)
                    continue
            try:
                result = func(value, state)
            except Exception as exc:
                errors.report(exc, key, value)
                continue
            if result is None:
                continue
            if multi:
                extend([(key, r) for r in result if r is not None])
            else:
                append((key, result))
        return out
