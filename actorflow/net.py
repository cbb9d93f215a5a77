"""Addresses: which of this host's addresses to use, and which a worker may listen on."""

from __future__ import annotations

import socket

from actorflow.errors import ConfigError


def route_address(host: str) -> str:
    """This host's address on the route to ``host`` (a UDP connect: nothing is sent).

    >>> route_address("127.0.0.1")
    '127.0.0.1'
    """
    if host == "localhost" or host.startswith("127."):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((host, 9))
            return s.getsockname()[0]
    except OSError as exc:
        msg = f"no route from this host to {host} ({exc.strerror or exc})"
        raise ConfigError(msg) from None


def listen_host(host: str, flag: str) -> str:
    """``host`` if a worker may listen there: one address, never all interfaces."""
    if host in ("", "0.0.0.0", "::", "*"):
        msg = (
            f"{flag} {host or '(empty)'}:...: a worker listens only on one address of its "
            "own; give this host's address (127.0.0.1 for a cluster on one machine)"
        )
        raise ConfigError(msg)
    return host
