"""One worker process: its Thespian admin, its guard, and (on the initializer) the topology.

``run_worker`` starts the admin on the control port, builds the cluster,
prints one ``ready`` line, and on SIGINT or SIGTERM stops the actor system and
ends every process the worker started (by process group id), leaving no
process and no listening port behind.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from actorflow.config import WorkerConfig, parse_worker_args
from actorflow.errors import ActorflowError, ClusterError
from actorflow.loader import load_application
from actorflow.messages import (
    BuildCluster,
    ClusterFailed,
    ClusterReady,
    GuardReady,
    GuardWorker,
    JoinCluster,
    JoinRefused,
    WorkerInfo,
)
from actorflow.net import free_port, listen_host, route_address
from actorflow.plan import compile_plan
from actorflow.processes import become_subreaper, group_alive, kill_group, reap_children
from actorflow.resilience import (
    ClusterRecord,
    WorkerFiles,
    read_cluster,
    read_state,
    remove_files,
    stale_hint,
    write_cluster,
)
from actorflow.security import ClusterSecret, find_secret, missing_secret_hint

log = logging.getLogger("actorflow.worker")

TOPOLOGY_NAME = "actorflow-topology"


class LeftCluster(ClusterError):
    """This worker had left its cluster (actorflow shrink) while it was down."""


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


def wait_for_control(host: str, port: int, timeout: float) -> None:
    """Wait until the initializer's control channel accepts connections."""
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                msg = (
                    f"no initializer answers on --control {host}:{port} after {timeout:g} s "
                    f"({exc.strerror or exc}); is the initializer started, and is the address "
                    "right? (--join-timeout sets how long to wait)"
                )
                raise ClusterError(msg) from None
            if not said:
                log.warning("waiting for the initializer's control channel at %s:%d", host, port)
                said = True
            time.sleep(0.2)


def wait_for_previous_incarnation(record: ClusterRecord, wait: float = 5.0) -> None:
    """Refuse to start beside a live incarnation of this worker (same command, alive);
    wait briefly for the actors of a dead one, which its guard is ending."""
    if record.pid and record.pid != os.getpid():
        try:
            with open(f"/proc/{record.pid}/cmdline", "rb") as f:
                theirs = f.read().split(b"\0")
            with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
                ours = f.read().split(b"\0")
        except OSError:  # gone (or no /proc): nothing runs beside us
            theirs, ours = [], [b"", b"?"]
        if theirs[1:] == ours[1:]:
            msg = (
                f"worker {record.worker!r} is running already (pid {record.pid}, same command); "
                "stop it before starting it again"
            )
            raise ClusterError(msg)
    deadline = time.monotonic() + wait
    while record.pgid and group_alive(record.pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def check_port_free(host: str, port: int, flag: str, wait: float = 0.0) -> None:
    """Refuse a port another process listens on: Thespian would silently join its admin.

    A restarting worker ``wait``s a little: the processes of its crashed incarnation
    may still hold the port until their guard ends them.
    """
    deadline = time.monotonic() + wait
    said = False
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", port))
            return
        except OSError as exc:
            if time.monotonic() >= deadline:
                msg = f"{flag} {host}:{port}: the port is in use ({exc.strerror})"
                raise ClusterError(msg) from None
            if not said:
                log.warning(
                    "%s %s:%d is still in use; waiting for the previous incarnation to release it",
                    flag,
                    host,
                    port,
                )
                said = True
        finally:
            s.close()
        time.sleep(0.1)


class Worker:
    """A running worker; ``stop()`` ends everything it started."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.system = None
        self.pgid: int | None = None
        self.summary: dict = {}

    def start(self) -> dict:
        """Start this worker's admin and guard, then build, join or rejoin the cluster."""
        cfg = self.cfg
        # Fail fast, before any process starts: the app must load and compile here.
        app = load_application(cfg.app, cfg.app_args)
        compile_plan(app)
        try:
            os.makedirs(cfg.resilience_dir, exist_ok=True)
        except OSError as exc:
            msg = f"--resilience-dir {cfg.resilience_dir}: {exc.strerror or exc}"
            raise ClusterError(msg) from None
        files = WorkerFiles(cfg.resilience_dir, app.name, cfg.name)
        record, resume = self.read_files(files)
        cfg = self.cfg  # the files' worker count, after a resize
        if record is not None:
            wait_for_previous_incarnation(record)
        host, port = cfg.control
        if cfg.initializer:
            my_host, my_port = listen_host(host, "--control"), port
            data = cfg.data
            check_port_free(my_host, my_port, "--control", wait=5.0 if record else 0.0)
        else:
            wait_for_control(host, port, cfg.join_timeout)
            my_host, my_port = cfg.my_control or (route_address(host), 0)
            listen_host(my_host, "--my-control")
            data = cfg.my_data
            if my_port:
                check_port_free(my_host, my_port, "--my-control", wait=5.0 if record else 0.0)
            else:
                my_port = free_port(my_host)
        if data is not None and data[0] != my_host:
            flag = "--data" if cfg.initializer else "--my-data"
            msg = (
                f"{flag} host {data[0]} differs from this worker's control host {my_host}: a "
                "worker's admin and actors all listen on one address of its own"
            )
            raise ClusterError(msg)
        # Every process of this worker (admin, logger, actors) listens on my_host only.
        os.environ["THESPIAN_BASE_IPADDR"] = my_host
        secret = self.cluster_secret()
        log.info(
            "worker %s: listening on %s (admin port %d, each actor on a port of its own); "
            "cluster traffic %s",
            cfg.name,
            my_host,
            my_port,
            f"authenticated (secret {secret.fingerprint})" if secret else "NOT authenticated",
        )
        from thespian.actors import InvalidActorAddress

        from actorflow import transport
        from actorflow.runtime.guard import WorkerGuard
        from actorflow.runtime.stage import WORKER_CAPABILITY, WORKER_UID_CAPABILITY
        from actorflow.runtime.topology import TopologyActor

        uid = f"{cfg.name}/{uuid.uuid4().hex}"
        caps = {"Admin Port": my_port, WORKER_CAPABILITY: cfg.name, WORKER_UID_CAPABILITY: uid}
        if not cfg.initializer:
            caps["Convention Address.IPv4"] = f"{host}:{port}"
        transport.install(secret)
        try:
            self.system = transport.start_worker_system(caps, thespian_log_config(cfg.log_level))
        except InvalidActorAddress:
            msg = (
                f"this worker's actor system did not start on {my_host}:{my_port}: another "
                "process holds the port, or the admin did not answer in time"
            )
            raise ClusterError(msg) from None
        here = {"worker_uid": uid}
        guard = self.system.createActor(WorkerGuard, targetActorRequirements=here)
        reply = self.system.ask(guard, GuardWorker(os.getpid(), cfg.name, uid, files), 15)
        if not isinstance(reply, GuardReady):
            raise ClusterError(f"the worker's actor system did not answer on port {my_port}")
        self.pgid = reply.pgid
        me = WorkerInfo(
            cfg.name,
            uid,
            cfg.app_args,
            f"{my_host}:{my_port}",
            bool(cfg.inputs),
            cluster_id=record.cluster_id if record else None,
            resilience_dir=os.path.abspath(cfg.resilience_dir),
            guard=guard,
            metrics=cfg.metrics,
        )
        if cfg.initializer:
            topology = self.system.createActor(
                TopologyActor, targetActorRequirements=here, globalName=TOPOLOGY_NAME
            )
            request = BuildCluster(cfg.app, me, cfg.worker_count, cfg.settings, files, resume)
            if resume is not None:
                log.info(
                    "worker %s: restarting cluster %s from %s (checkpoint %d)",
                    cfg.name,
                    resume.cluster_id,
                    files.checkpoint,
                    resume.checkpoint,
                )
            reply = self.system.ask(topology, request, cfg.ready_timeout)
        else:
            # Talk to the topology actor through the initializer's admin, as a client.
            control = transport.connect_to_admin(host, port, cfg.join_timeout, my_host)
            topology = control.createActor(TopologyActor, globalName=TOPOLOGY_NAME)
            log.info(
                "worker %s: %s the cluster at %s:%d",
                cfg.name,
                "rejoining" if record else "joining",
                host,
                port,
            )
            grow = cfg.grow and record is None  # a grown worker restarts as a member
            control.tell(topology, JoinCluster(me, cfg.worker_count, cfg.settings, grow))
            reply = self._await_cluster(control, host, port)
        if isinstance(reply, JoinRefused) and reply.left:
            removed = remove_files(files)
            raise LeftCluster(f"{reply.reason}; removed its {removed} resilience files")
        if isinstance(reply, JoinRefused) and reply.stale:
            raise ClusterError(
                f"refused: {reply.reason}; " + stale_hint(cfg.resilience_dir, files.existing())
            )
        if isinstance(reply, ClusterFailed | JoinRefused):
            raise ClusterError(reply.reason)
        if not isinstance(reply, ClusterReady):
            msg = f"the cluster did not become ready within {cfg.ready_timeout:g} s"
            if cfg.worker_count > 1:
                msg += f" (are all {cfg.worker_count} workers started?)"
            raise ClusterError(msg)
        write_cluster(
            files,
            ClusterRecord(
                reply.cluster_id,
                app.name,
                cfg.app,
                cfg.name,
                cfg.initializer,
                f"{host}:{port}",
                len(reply.workers) or cfg.worker_count,
                [list(w) for w in reply.workers],
                cfg.settings.partitions,
                cfg.settings.state_actors,
                os.getpid(),
                self.pgid or 0,
                resized=bool(record and record.resized) or cfg.grow,
            ),
        )
        self.summary = reply.summary
        return reply.summary

    def cluster_secret(self) -> ClusterSecret | None:
        """The secret that seals this cluster's messages (see actorflow.security)."""
        cfg = self.cfg
        if not cfg.cluster_auth:
            log.warning(
                "worker %s: --no-cluster-auth: anyone who reaches this worker's ports can "
                "run code in it",
                cfg.name,
            )
            return None
        found = find_secret(cfg.cluster_secret_file, cfg.resilience_dir, create=cfg.initializer)
        if found is None:
            msg = f"this worker has no cluster secret: {missing_secret_hint(cfg.resilience_dir)}"
            raise ClusterError(msg)
        return found

    def read_files(self, files: WorkerFiles) -> tuple[Any, Any]:
        """This worker's resilience files: (cluster record, initializer's state), or Nones.

        Files that do not fit this command are stale: refuse them, naming them and the
        command that removes them.
        """
        cfg = self.cfg
        try:
            record = read_cluster(files)
            if record is None:
                return None, None
            wrong = []
            if record.worker_count != cfg.worker_count and record.resized:
                log.info(
                    "worker %s: the cluster was resized to %d workers since it formed; "
                    "--worker-count %d is taken as %d",
                    cfg.name,
                    record.worker_count,
                    cfg.worker_count,
                    record.worker_count,
                )
                self.cfg = cfg = dataclasses.replace(cfg, worker_count=record.worker_count)
            if record.worker_count != cfg.worker_count:
                wrong.append(f"--worker-count {record.worker_count}")
            if record.initializer != cfg.initializer:
                wrong.append("the initializer role" if record.initializer else "a joining role")
            if record.control != f"{cfg.control[0]}:{cfg.control[1]}":
                wrong.append(f"--control {record.control}")
            if record.partitions != cfg.settings.partitions:
                wrong.append(f"--partitions {record.partitions}")
            if record.state_actors != cfg.settings.state_actors:
                wrong.append(f"--state-actors {record.state_actors}")
            if wrong:
                msg = f"{files.cluster} records {', '.join(wrong)}, unlike this command"
                raise ValueError(msg)
            resume = read_state(files) if cfg.initializer else None
            if cfg.initializer and (resume is None or resume.cluster_id != record.cluster_id):
                raise ValueError(f"{files.checkpoint} is missing or from another cluster")
        except ValueError as exc:
            hint = stale_hint(cfg.resilience_dir, files.existing())
            raise ClusterError(f"{exc}: {hint}") from None
        log.info(
            "worker %s: found resilience files of cluster %s in %s",
            cfg.name,
            record.cluster_id,
            cfg.resilience_dir,
        )
        return record, resume

    def _await_cluster(self, control: Any, host: str, port: int) -> object:
        """Wait for the topology's answer; give up early if the initializer goes away."""
        deadline = time.monotonic() + self.cfg.ready_timeout
        while time.monotonic() < deadline:
            reply = control.listen(1.0)
            if reply is not None:
                return reply
            try:
                socket.create_connection((host, port), timeout=2.0).close()
            except OSError:
                msg = f"the initializer at {host}:{port} went away before the cluster started"
                raise ClusterError(msg) from None
        return None

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


def _ready_line(name: str, summary: dict, pgid: int | None) -> str:
    sources = "; ".join(
        f"{w}: {', '.join(addrs)}" for w, addrs in summary.get("sources", {}).items()
    )
    actors = sum(len(v) for v in summary.get("workers", {}).values())
    return (
        f"actorflow worker {name}: ready, {actors} actors, sources {sources or 'none'} "
        f"(actor process group {pgid})"
    )


def run_worker(argv: Sequence[str] | None = None, app: str | None = None) -> int:
    """The worker command. ``app`` is given when the app module itself is the program."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    # Thespian notices a lost convention member only after 3 missed re-registrations,
    # 7m22s apart by default; members re-register with a restarted initializer just as
    # slowly. Both periods shortened together (one alone makes the leader drop members).
    os.environ.setdefault("CONVENTION_REREGISTRATION_PERIOD", "0:02")
    os.environ.setdefault("CONVENTION_RESTART_PERIOD", "0:01")
    try:
        cfg = parse_worker_args(argv, app)
    except ActorflowError as exc:
        print(f"actorflow worker: error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger().setLevel(cfg.log_level)
    stop = threading.Event()
    starting = True

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        if starting:  # abort a start-up that waits for the cluster
            raise ClusterError(f"interrupted by signal {signum} while starting")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    become_subreaper()
    worker = Worker(cfg)
    try:
        summary = worker.start()
        starting = False
        print(_ready_line(cfg.name, summary, worker.pgid), flush=True)
        while not stop.wait(0.5):
            reap_children()
        log.info("worker %s: stopping", cfg.name)
        return 0
    except LeftCluster as exc:
        print(f"actorflow worker {cfg.name}: {exc}", file=sys.stderr, flush=True)
        return 0
    except ActorflowError as exc:
        print(f"actorflow worker {cfg.name}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        worker.stop()
