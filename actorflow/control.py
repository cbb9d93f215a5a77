"""Cluster queries and commands through the control channel: ``actorflow status``,
``actorflow shutdown`` and ``actorflow clean``.

The client attaches to the initializer's running Thespian admin (it never starts
one: the control port must already be listening), asks the topology actor, and
detaches without shutting the admin down itself.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from actorflow.config import host_port
from actorflow.errors import ActorflowError, ClusterError
from actorflow.messages import ClusterStatus, ShutdownCluster, ShutdownDone, StatusQuery
from actorflow.resilience import clean


def ask_topology(control: tuple[str, int], message: Any, timeout: float) -> Any:
    """Send ``message`` to the topology actor behind ``control``; its answer or None."""
    host, port = control
    try:
        socket.create_connection((host, port), timeout=2.0).close()
    except OSError as exc:
        msg = f"no actorflow worker listens on --control {host}:{port} ({exc.strerror or exc})"
        raise ClusterError(msg) from None
    from thespian.actors import ActorSystem

    from actorflow.runtime.topology import TopologyActor
    from actorflow.worker import TOPOLOGY_NAME

    system = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
    topology = system.createActor(TopologyActor, globalName=TOPOLOGY_NAME)
    return system.ask(topology, message, timeout)


def query_status(control: tuple[str, int], timeout: float = 10.0) -> dict[str, Any]:
    """The cluster status from the topology actor behind ``control``."""
    reply = ask_topology(control, StatusQuery(), timeout)
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


def shutdown_cluster(control: tuple[str, int], timeout: float = 60.0) -> ShutdownDone:
    """Take a last checkpoint and stop every worker; the files then restart the cluster."""
    reply = ask_topology(control, ShutdownCluster(), timeout)
    if not isinstance(reply, ShutdownDone):
        msg = f"the cluster at {control[0]}:{control[1]} did not answer within {timeout:g} s"
        raise ClusterError(msg)
    if not reply.workers:
        raise ClusterError(f"{control[0]}:{control[1]}: {reply.error or 'no cluster there'}")
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
    if status.get("unanswered"):
        lines.append(f"no answer from: {', '.join(status['unanswered'])}")
    return "\n".join(lines)


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, help="the initializer's control address host:port")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")


def main(args: argparse.Namespace) -> int:
    try:
        status = query_status(host_port(args.control, "--control"), args.timeout)
    except ActorflowError as exc:
        print(f"actorflow status: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else format_status(status))
    return 0


def configure_shutdown_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", required=True, help="the initializer's control address")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it")


def shutdown_main(args: argparse.Namespace) -> int:
    try:
        done = shutdown_cluster(host_port(args.control, "--control"), args.timeout)
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


def configure_clean_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resilience-dir", "-r", default="/tmp", help="the workers' folder")
    p.add_argument("--app", help="only this app's files (its build_application name)")


def clean_main(args: argparse.Namespace) -> int:
    removed = clean(args.resilience_dir, args.app)
    for path in removed:
        print(f"removed {path}")
    print(f"actorflow clean: {len(removed)} file(s) removed from {args.resilience_dir}")
    return 0
