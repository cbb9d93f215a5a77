"""Process control shared by the worker command, the test harness and the tools.

Thespian's admin daemonizes (setsid, double fork) and outlives whoever started it, so
everything that starts workers needs the same few tools to leave nothing behind:
end a process group by id, reap zombies, adopt orphans, and tie a child to its parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value)
    except (OSError, AttributeError):
        pass  # not Linux: the guard actor still ends orphaned workers


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the parent dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def become_subreaper() -> None:
    """Orphaned descendants (the daemonized admin, actors of a dead admin) become our
    children, so we reap them at once instead of leaving zombies in their group."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def reap_children() -> None:
    """Collect every exited child without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def kill_group(pgid: int, wait: float = 5.0) -> bool:
    """SIGKILL the process group ``pgid`` (never our own) until it is gone; True if gone."""
    if pgid == os.getpgid(0):
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        reap_children()  # a zombie child of ours may still be counted in the group
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return not group_alive(pgid)


@contextlib.contextmanager
def signals_masked() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM inside the block (main thread only), so that a second
    Ctrl-C cannot cut a clean-up short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt like Ctrl-C (main thread only),
    so a tool cleans up the same way for both."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cpu_seconds(pgids: set[int], pids: set[int] = frozenset()) -> float:
    """CPU time (user + system) used so far by every live process in the process groups
    ``pgids`` and by ``pids``: what a worker costs, summed over its actor processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # after "pid (comm)": state ppid pgrp ... utime is field 14, stime 15 (1-based)
        if int(fields[2]) in pgids or int(entry) in pids:
            total += int(fields[11]) + int(fields[12])
    return total / tick
