"""One worker process: its Thespian admin, its guard, and (on the initializer) the topology.

``run_worker`` starts the admin on the control port, builds the cluster,
prints one ``ready`` line, and on SIGINT or SIGTERM stops the actor system and
ends every process the worker started (by process group id), leaving no
process and no listening port behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence

from actorflow.config import WorkerConfig, parse_worker_args
from actorflow.errors import ActorflowError, ClusterError
from actorflow.loader import load_application
from actorflow.messages import (
    BuildCluster,
    ClusterFailed,
    ClusterReady,
    GuardReady,
    GuardWorker,
    WorkerInfo,
)
from actorflow.plan import compile_plan

log = logging.getLogger("actorflow.worker")

TOPOLOGY_NAME = "actorflow-topology"


def thespian_log_config(level: str) -> dict:
    """Actor logs go to this worker's stderr, through Thespian's logger process."""
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "plain", "level": level}
        },
        "root": {"handlers": ["stderr"], "level": level},
    }


def check_port_free(host: str, port: int, flag: str) -> None:
    """Refuse a port another process listens on: Thespian would silently join its admin."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", port))
    except OSError as exc:
        msg = f"{flag} {host}:{port}: the port is in use ({exc.strerror})"
        raise ClusterError(msg) from None
    finally:
        s.close()


class Worker:
    """A running worker; ``stop()`` ends everything it started."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.system = None
        self.pgid: int | None = None
        self.summary: dict = {}

    def start(self) -> dict:
        cfg = self.cfg
        # Fail fast, before any process starts: the app must load and compile here.
        app = load_application(cfg.app, cfg.app_args)
        compile_plan(app)
        host, port = cfg.control
        check_port_free(host, port, "--control")
        if cfg.data:
            os.environ["THESPIAN_BASE_IPADDR"] = cfg.data[0]
            log.info(
                "actors advertise %s (--data); each actor listens on its own port", cfg.data[0]
            )
        elif "THESPIAN_BASE_IPADDR" not in os.environ:
            os.environ["THESPIAN_BASE_IPADDR"] = host
        if cfg.metrics:
            log.warning(
                "--metrics %s: metrics reporting is not implemented yet; nothing is sent",
                cfg.metrics,
            )

        from thespian.actors import ActorSystem

        from actorflow.runtime.guard import WorkerGuard
        from actorflow.runtime.stage import WORKER_CAPABILITY
        from actorflow.runtime.topology import TopologyActor

        caps = {"Admin Port": port, WORKER_CAPABILITY: cfg.name}
        self.system = ActorSystem(
            "multiprocTCPBase",
            caps,
            logDefs=thespian_log_config(cfg.log_level),
            transientUnique=True,
        )
        where = {"worker": cfg.name}
        guard = self.system.createActor(WorkerGuard, targetActorRequirements=where)
        reply = self.system.ask(guard, GuardWorker(os.getpid()), 15)
        if not isinstance(reply, GuardReady):
            raise ClusterError(f"the worker's actor system did not answer on port {port}")
        self.pgid = reply.pgid
        topology = self.system.createActor(
            TopologyActor, targetActorRequirements=where, globalName=TOPOLOGY_NAME
        )
        me = WorkerInfo(cfg.name, cfg.app_args, f"{host}:{port}")
        reply = self.system.ask(
            topology, BuildCluster(cfg.app, (me,), cfg.settings), cfg.ready_timeout
        )
        if isinstance(reply, ClusterFailed):
            raise ClusterError(reply.reason)
        if not isinstance(reply, ClusterReady):
            msg = f"the cluster did not become ready within {cfg.ready_timeout:g} s"
            raise ClusterError(msg)
        self.summary = reply.summary
        return reply.summary

    def stop(self) -> None:
        """Stop the actor system; then end whatever is left of its process group."""
        if self.system is not None:
            done = threading.Event()

            def shutdown() -> None:
                try:
                    self.system.shutdown()
                except Exception as exc:  # the admin may already be gone
                    log.debug("actor system shutdown: %s", exc)
                done.set()

            threading.Thread(target=shutdown, daemon=True).start()
            done.wait(10)
            self.system = None
        if self.pgid is not None:
            kill_group(self.pgid)
            self.pgid = None


def kill_group(pgid: int, grace: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, the process group ``pgid`` (never our own)."""
    if pgid == os.getpgid(0):
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def _ready_line(name: str, summary: dict, pgid: int | None) -> str:
    sources = "; ".join(
        f"{w}: {', '.join(addrs)}" for w, addrs in summary.get("sources", {}).items()
    )
    actors = sum(len(v) for v in summary.get("workers", {}).values())
    return (
        f"actorflow worker {name}: ready, {actors} actors, sources {sources or 'none'} "
        f"(actor process group {pgid})"
    )


def _reap_children() -> None:
    """Collect exited children (Thespian's daemonizing fork leaves one behind)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run_worker(argv: Sequence[str] | None = None, app: str | None = None) -> int:
    """The worker command. ``app`` is given when the app module itself is the program."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg = parse_worker_args(argv, app)
    except ActorflowError as exc:
        print(f"actorflow worker: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(cfg.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    worker = Worker(cfg)
    try:
        summary = worker.start()
        print(_ready_line(cfg.name, summary, worker.pgid), flush=True)
        while not stop.wait(0.5):
            _reap_children()
        log.info("worker %s: stopping", cfg.name)
        return 0
    except ActorflowError as exc:
        print(f"actorflow worker {cfg.name}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        worker.stop()
