"""Cluster queries through the control channel: ``actorflow status --control H:P``.

The client attaches to the worker's running Thespian admin (it never starts
one: the control port must already be listening), asks the topology actor,
and detaches without shutting anything down.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from actorflow.config import host_port
from actorflow.errors import ActorflowError, ClusterError
from actorflow.messages import ClusterStatus, StatusQuery


def query_status(control: tuple[str, int], timeout: float = 10.0) -> dict[str, Any]:
    """The cluster status from the topology actor behind ``control``."""
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
    reply = system.ask(topology, StatusQuery(), timeout)
    if not isinstance(reply, ClusterStatus):
        msg = f"the cluster at {host}:{port} did not answer within {timeout:g} s"
        raise ClusterError(msg)
    return reply.status


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
            extra = (
                f", {a['partitions']} partitions, {figures.get('keys', 0)} keys"
                if (a["kind"] == "state")
                else ""
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
    p.add_argument("--control", required=True, help="a worker's control address host:port")
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
