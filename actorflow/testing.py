"""Test an app: in one process with :func:`run`, or on real workers.

:func:`run` (with :class:`Clock`, :class:`Advance`, :class:`At`, :class:`Payload`)
runs an app's plan and step code in this process, no actors or sockets, with a clock
the test controls, and returns the outputs per sink (``actorflow/runtime/local.py``).

:class:`WorkerProcess` starts ``actorflow worker`` as a child process, waits
for its ``ready`` line (never a fixed sleep), and on ``stop()`` ends the
worker and every process of its actor group by id. The child gets
``PR_SET_PDEATHSIG``, so even a caller that dies abruptly takes its workers
along (the worker's guard then ends the actors).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from actorflow.net import free_port
from actorflow.processes import die_with_parent, kill_group
from actorflow.runtime.local import Advance, At, Clock, Outputs, Payload, run
from actorflow.security import SECRET_ENV, ClusterSecret, parse_secret
from actorflow.tools.send import send_acked

__all__ = [
    "Advance",
    "At",
    "Clock",
    "Cluster",
    "Outputs",
    "Payload",
    "WorkerProcess",
    "free_port",
    "run",
    "running_worker",
]

_READY = re.compile(r"actorflow worker (?P<name>\S+): ready.*\(actor process group (?P<pgid>\d+)\)")


class WorkerProcess:
    """One ``actorflow worker`` child process."""

    def __init__(
        self,
        app: str,
        args: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_path: str | None = None,
        prefix: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.args = list(args)
        self.prefix = list(prefix)  # e.g. ip netns exec HOST: run it on another host
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.ready_line: str | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._log_file = None

    def start(self) -> WorkerProcess:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="actorflow-worker-", suffix=".log")
            os.close(fd)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "actorflow", "worker", "--app", self.app]
            + self.args,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            preexec_fn=die_with_parent,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            m = _READY.search(line)
            if m:
                self.pgid = int(m.group("pgid"))
                self.ready_line = line.strip()
                self._ready.set()
        self._ready.set()

    def settled(self, timeout: float = 0.0) -> bool:
        """Whether the worker is ready or has exited (waiting up to ``timeout``)."""
        assert self.proc is not None
        return self._ready.wait(timeout) or self.proc.poll() is not None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until the worker prints its ready line; raise with its log otherwise."""
        assert self.proc is not None
        if not self._ready.wait(timeout) or self.ready_line is None:
            self.not_ready(timeout)
        assert self.ready_line is not None
        return self.ready_line

    def not_ready(self, waited: float) -> None:
        """Raise what went wrong: the worker exited, or was not ready in time; its log."""
        assert self.proc is not None
        try:
            code: int | None = self.proc.wait(1)  # its output just ended: it is exiting
        except subprocess.TimeoutExpired:
            code = None
        why = f"exited with {code}" if code is not None else f"not ready after {waited:g} s"
        raise RuntimeError(f"worker {why}; its log:\n{self.log()}")

    def log(self) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def wait_log(self, pattern: str, timeout: float = 30.0) -> bool:
        """Wait until the worker's log matches ``pattern`` (a regular expression)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if rx.search(self.log()):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM the worker, wait for it, then make sure its actor group is gone."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait(5)
        if self.pgid is not None:
            kill_group(self.pgid, wait=10.0)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code


@contextlib.contextmanager
def running_worker(app: str, args: Sequence[str], timeout: float = 60.0) -> Iterator[WorkerProcess]:
    """A started, ready worker that is stopped on exit, pass or fail."""
    w = WorkerProcess(app, args).start()
    try:
        w.wait_ready(timeout)
        yield w
    finally:
        w.stop()


class AckedSender:
    """An acknowledged sender in a thread: it resumes through restarts and rollbacks,
    and :meth:`finish` gives its summary (or raises what stopped it)."""

    def __init__(
        self, host: str, port: int, frames: list[bytes], stream: str, token: str, kw: dict
    ) -> None:
        self.stop = threading.Event()
        self.result: dict[str, Any] = {}
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = send_acked(
                    host, port, frames, stream=stream, token=token, stop=self.stop, **kw
                )
            except BaseException as exc:  # raised again by finish()
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"acked-{stream}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the sender to be done; its summary ("acked", "reconnects", ...)."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the sender did not finish within {timeout:g} s")
        if self.error is not None:
            raise self.error
        return self.result


class Cluster:
    """N workers of one app on free loopback ports, started the way the design document does.

    ``outs[i]`` is the ``--out`` address of worker i (one receiver each, or all the same);
    ``inputs[i]`` is worker i's ``--in`` port, or None for a worker without a source.
    """

    def __init__(
        self,
        app: str,
        workers: int,
        outs: Sequence[int],
        *,
        source_name: str = "in",
        inputs: Sequence[int | None] | None = None,
        extra: Sequence[str] = (),
        log_dir: str | None = None,
    ) -> None:
        self.app = app
        self.count = workers
        self.control = free_port()
        self.names = [f"worker{i + 1}" for i in range(workers)]
        self.data = free_port()  # the initializer's --data: one command for every restart
        self.inputs = list(inputs) if inputs is not None else [free_port() for _ in self.names]
        self.outs = list(outs) if len(outs) == workers else [outs[0]] * workers
        self.source_name = source_name
        self.extra = list(extra)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="actorflow-cluster-")
        self.workers: list[WorkerProcess] = []
        self.joined: set[int] = set()  # workers that grew the running cluster (--join)
        self.counts: dict[int, int] = {}  # each worker's --worker-count, fixed at its start
        # One secret for all its workers, as on several machines (each has its own
        # --resilience-dir); one from the environment wins.
        self.env = dict(os.environ)
        self.env.setdefault(SECRET_ENV, secrets.token_hex(32))

    def args(self, i: int) -> list[str]:
        """Worker i's command line, as in the design document's example."""
        a = []
        if self.inputs[i] is not None:
            a += ["--in", f"{self.source_name}@127.0.0.1:{self.inputs[i]}"]
        a += [
            "--out",
            f"127.0.0.1:{self.outs[i]}",
            "--join" if i in self.joined else "--control",
            f"127.0.0.1:{self.control}",
            "--worker-count",
            str(self.counts.setdefault(i, self.count)),
            "--worker-name",
            self.names[i],
        ]
        a += ["--resilience-dir", self.resilience_dir(i)]
        if i == 0:
            a += ["--data", f"127.0.0.1:{self.data}", "--topology-initializer"]
        return a + self.extra

    def secret(self) -> ClusterSecret:
        """The cluster's secret, for cluster commands (``query_status(..., secret)``)."""
        return parse_secret(self.env[SECRET_ENV])

    def stream_token(self, stream: str) -> str:
        """What an acknowledged sender needs to claim ``stream`` in this cluster."""
        return parse_secret(self.env[SECRET_ENV]).stream_token(stream)

    def send_acked(self, i: int, frames: list[bytes], stream: str, **kw: Any) -> AckedSender:
        """Send ``frames`` to worker i's source as the acknowledged stream ``stream``, in a
        thread (``kw``: :func:`actorflow.tools.send.send_acked`'s pacing and patience)."""
        port = self.inputs[i]
        assert port is not None, f"worker {i} has no source"
        return AckedSender("127.0.0.1", port, frames, stream, self.stream_token(stream), kw)

    def resilience_dir(self, i: int) -> str:
        """Worker i's resilience folder (one per worker, as on separate machines)."""
        path = os.path.join(self.log_dir, f"resilience-{self.names[i]}")
        os.makedirs(path, exist_ok=True)
        return path

    def start_worker(self, i: int, *more: str) -> WorkerProcess:
        log = os.path.join(self.log_dir, f"{self.names[i]}-{len(self.workers)}.log")
        w = WorkerProcess(self.app, [*self.args(i), *more], env=self.env, log_path=log).start()
        self.workers.append(w)
        return w

    def grow(
        self, *more: str, with_source: bool = True, in_port: int | None = None
    ) -> WorkerProcess:
        """Start one more worker with ``--join`` (and ``more`` flags; its source on
        ``in_port``, by default a free one): the running cluster grows by it."""
        i = len(self.names)
        self.names.append(f"worker{i + 1}")
        self.inputs.append((in_port or free_port()) if with_source else None)
        self.outs.append(self.outs[-1])
        self.count += 1
        self.joined.add(i)
        return self.start_worker(i, *more)

    def start(self, timeout: float = 60.0) -> Cluster:
        """Start every worker (initializer first) and wait until all are ready; the first
        that exits instead ends the wait, with its log (the others would wait for it)."""
        waiting = [self.start_worker(i) for i in range(self.count)]
        deadline = time.monotonic() + timeout
        while waiting:
            for w in list(waiting):
                if w.settled(0.05):
                    w.wait_ready(0)  # raises if it exited
                    waiting.remove(w)
            if waiting and time.monotonic() > deadline:
                waiting[0].not_ready(timeout)
        return self

    def stop(self) -> None:
        """Stop every worker, joiners first; end their actor groups."""
        for w in reversed(self.workers):
            w.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
