"""Cluster queries and commands through the control channel: ``actorflow status``,
``actorflow shutdown``, ``actorflow shrink`` and ``actorflow clean``.

The client attaches to the initializer's running Thespian admin (it never starts
one: the control port must already be listening), asks the topology actor, and
detaches without shutting the admin down itself.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from typing import Any

from actorflow.config import host_port
from actorflow.errors import ActorflowError, ClusterError
from actorflow.messages import (
    ClusterStatus,
    ShrinkCluster,
    ShrinkDone,
    ShutdownCluster,
    ShutdownDone,
    StatusQuery,
)
from actorflow.resilience import clean
from actorflow.security import ClusterSecret, find_secret, missing_secret_hint


def ask_topology(
    control: tuple[str, int],
    message: Any,
    timeout: float,
    secret: ClusterSecret | bool | None = None,
) -> Any:
    """Send ``message`` to the topology actor behind ``control``; its answer or None.

    Works from any host; never starts an admin. ``secret`` is the cluster's (see
    :func:`command_secret`); None takes it from ``$ACTORFLOW_CLUSTER_SECRET``; False
    sends unsealed messages, which only a cluster run with --no-cluster-auth takes.
    """
    if secret is None:
        secret = find_secret(None, None)
        if secret is None:
            raise ClusterError(f"no cluster secret: {missing_secret_hint('/tmp')}")
    host, port = control
    try:
        socket.create_connection((host, port), timeout=min(timeout, 5.0)).close()
    except OSError as exc:
        msg = f"no actorflow worker listens on --control {host}:{port} ({exc.strerror or exc})"
        raise ClusterError(msg) from None
    from actorflow import transport
    from actorflow.runtime.topology import TopologyActor
    from actorflow.worker import TOPOLOGY_NAME

    transport.install(secret or None)
    started = time.monotonic()
    system = transport.connect_to_admin(host, port, timeout)
    left = max(timeout - (time.monotonic() - started), 0.5)
    topology = system.createActor(TopologyActor, globalName=TOPOLOGY_NAME)
    return system.ask(topology, message, left)


def command_secret(args: argparse.Namespace) -> ClusterSecret | bool:
    """The secret a cluster command seals its messages with (flags, environment, or
    the resilience folder on this host); ClusterError if there is none."""
    if args.no_cluster_auth:
        return False
    found = find_secret(args.cluster_secret_file, args.resilience_dir)
    if found is None:
        msg = f"no cluster secret: {missing_secret_hint(args.resilience_dir)}"
        raise ClusterError(msg)
    return found


def add_secret_flags(p: argparse.ArgumentParser) -> None:
    """Where a cluster command finds the cluster's secret."""
    p.add_argument(
        "--cluster-secret-file",
        help="the cluster's secret (default: $ACTORFLOW_CLUSTER_SECRET, else actorflow.secret "
        "in --resilience-dir)",
    )
    p.add_argument(
        "--resilience-dir", "-r", default="/tmp", help="where to look for actorflow.secret"
    )
    p.add_argument(
        "--no-cluster-auth", action="store_true", help="for a cluster run with --no-cluster-auth"
    )


def query_status(
    control: tuple[str, int], timeout: float = 10.0, secret: ClusterSecret | bool | None = None
) -> dict[str, Any]:
    """The cluster status from the topology actor behind ``control``."""
    reply = ask_topology(control, StatusQuery(), timeout, secret)
    if not isinstance(reply, ClusterStatus):
        msg = f"the cluster at {control[0]}:{control[1]} did not answer within {timeout:g} s"
        raise ClusterError(msg)
    if reply.status.get("state") == "not the initializer":
        msg = (
            f"{control[0]}:{control[1]} is a joining worker's admin, not the initializer's "
            "--control address"
        )
        raise ClusterError(msg)
    return reply.status


def shutdown_cluster(
    control: tuple[str, int], timeout: float = 60.0, secret: ClusterSecret | bool | None = None
) -> ShutdownDone:
    """Take a last checkpoint and stop every worker; the files then restart the cluster."""
    reply = ask_topology(control, ShutdownCluster(), timeout, secret)
    if not isinstance(reply, ShutdownDone):
        msg = f"the cluster at {control[0]}:{control[1]} did not answer within {timeout:g} s"
        raise ClusterError(msg)
    if not reply.workers:
        raise ClusterError(f"{control[0]}:{control[1]}: {reply.error or 'no cluster there'}")
    return reply


def shrink_cluster(
    control: tuple[str, int],
    workers: tuple[str, ...] = (),
    count: int = 0,
    timeout: float = 60.0,
    secret: ClusterSecret | bool | None = None,
) -> ShrinkDone:
    """Have ``workers`` (or ``count`` workers, the last to join first) hand their
    partitions over and leave; ClusterError naming the reason if the cluster refuses."""
    reply = ask_topology(control, ShrinkCluster(tuple(workers), count), timeout, secret)
    if not isinstance(reply, ShrinkDone):
        msg = f"the cluster at {control[0]}:{control[1]} did not answer within {timeout:g} s"
        raise ClusterError(msg)
    if reply.error:
        raise ClusterError(reply.error)
    return reply


def format_status(status: dict[str, Any]) -> str:
    """A short human-readable report."""
    lines = [
        f"cluster: {status.get('app', '?')}, {status['worker_count']} worker(s): "
        f"{', '.join(status['worker_names'])}; "
        f"{'processing' if status['processing_messages'] else status['state']}",
    ]
    actors = status.get("actors", {})
    for worker, group in status.get("workers", {}).items():
        lines.append(f"worker {worker}:")
        for a in group:
            figures = actors.get(f"{a['stage']}@{worker}", {})
            extra = ""
            if a["kind"] == "state":
                keys = figures.get("key_sample", [])
                shown = ", ".join(keys[:10]) + (" ..." if figures.get("keys", 0) > 10 else "")
                extra = (
                    f", partitions {a.get('partition_ranges', '?')}, "
                    f"{figures.get('keys', 0)} keys ({shown})"
                )
            lines.append(
                f"  {a['stage']:<12} {a['kind']:<7} in {figures.get('records_in', '?'):>10} "
                f"out {figures.get('records_out', '?'):>10} errors {figures.get('errors', '?')}"
                f"{extra}"
            )
    rescale = status.get("last_rescale")
    if rescale:
        lines.append(
            f"owner table version {status.get('table_version')}: last {rescale['kind']} "
            f"{rescale.get('outcome', '')}, {rescale.get('partitions_moved', 0)} partitions "
            f"moved, processing paused {rescale.get('pause_seconds', 0):.2f} s"
        )
    if status.get("unanswered"):
        lines.append(f"no answer from: {', '.join(status['unanswered'])}")
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, help="the initializer's control address host:port")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    add_secret_flags(p)


def main(args: argparse.Namespace) -> int:
    try:
        control = host_port(args.control, "--control")
        status = query_status(control, args.timeout, command_secret(args))
    except ActorflowError as exc:
        print(f"actorflow status: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0


def configure_shutdown_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, help="the initializer's control address")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it")
    add_secret_flags(p)


def shutdown_main(args: argparse.Namespace) -> int:
    try:
        control = host_port(args.control, "--control")
        done = shutdown_cluster(control, args.timeout, command_secret(args))
    except ActorflowError as exc:
        print(f"actorflow shutdown: error: {exc}", file=sys.stderr)
        return 1
    if done.error:
        print(f"actorflow shutdown: {done.error}; stopping the workers anyway", file=sys.stderr)
    print(
        f"actorflow shutdown: stopping {len(done.workers)} worker(s) "
        f"({', '.join(done.workers)}) at checkpoint {done.checkpoint}; start them again "
        "with the same commands to resume, or run actorflow clean to start anew"
    )
    return 0


def configure_shrink_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, help="the initializer's control address")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--workers", help="the workers that leave: name,name,...")
    which.add_argument("--count", type=int, help="how many workers leave (the last to join)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it")
    add_secret_flags(p)


def shrink_main(args: argparse.Namespace) -> int:
    try:
        control = host_port(args.control, "--control")
        names = tuple(n.strip() for n in (args.workers or "").split(",") if n.strip())
        if args.count is not None and args.count < 1:
            raise ClusterError(f"--count must be 1 or more; got {args.count}")
        done = shrink_cluster(control, names, args.count or 0, args.timeout, command_secret(args))
    except ActorflowError as exc:
        print(f"actorflow shrink: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"actorflow shrink: {', '.join(done.left)} handed over their partitions and left; "
        f"the cluster runs on {len(done.workers)} worker(s): {', '.join(done.workers)}"
    )
    return 0


def configure_clean_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resilience-dir", "-r", default="/tmp", help="the workers' folder")
    p.add_argument("--app", help="only this app's files (its build_application name)")


def clean_main(args: argparse.Namespace) -> int:
    removed = clean(args.resilience_dir, args.app)
    for path in removed:
        print(f"removed {path}")
    print(f"actorflow clean: {len(removed)} file(s) removed from {args.resilience_dir}")
    return 0


def configure_token_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stream", required=True, help="the acknowledged stream's name")
    p.add_argument(
        "--cluster-secret-file",
        help="the cluster's secret (default: $ACTORFLOW_CLUSTER_SECRET, else actorflow.secret "
        "in --resilience-dir)",
    )
    p.add_argument("--resilience-dir", "-r", default="/tmp", help="where actorflow.secret is")


def token_main(args: argparse.Namespace) -> int:
    """Print the token that lets one sender claim one stream (``send --stream-token``):
    hand a sender its stream's token instead of the whole cluster secret."""
    try:
        secret = find_secret(args.cluster_secret_file, args.resilience_dir)
    except ActorflowError as exc:
        print(f"actorflow token: error: {exc}", file=sys.stderr)
        return 1
    if secret is None:
        hint = missing_secret_hint(args.resilience_dir)
        print(f"actorflow token: error: no cluster secret: {hint}", file=sys.stderr)
        return 1
    print(secret.stream_token(args.stream))
    return 0
