"""Addresses and ports: which of this host's addresses to use, which a worker may listen
on, which port is safe to take for later; and how a listening actor ends a connection so
that its last words arrive."""

from __future__ import annotations

import random
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


def close_after_last_words(sock: socket.socket, unread_limit: int = 4 << 20) -> None:
    """Close ``sock`` so that what was sent on it last still reaches the peer.

    Closing a socket with unread input makes the kernel reset the connection and drop
    what it still holds to send: a small frame waiting behind Nagle's rule, such as a
    source's ``{"moved": ...}`` notice, is lost. Shutting down the writing side first
    pushes it out with the FIN; reading what is there (up to ``unread_limit`` bytes, never
    blocking) lets the close go without a reset.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.setblocking(False)
        left = unread_limit
        while left > 0 and (data := sock.recv(min(left, 1 << 20))):
            left -= len(data)
    except OSError:
        pass  # gone already, or nothing more to read now
    finally:
        sock.close()


_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing uses right now, outside the kernel's ephemeral range.

    Thespian's actors bind ephemeral ports all the time; a port taken from that range
    for later use could be grabbed by one of them before our worker binds it.
    """
    low, high = _ephemeral_range()
    candidates = [p for p in range(10000, 30000) if not low <= p <= high] or list(
        range(1024, 65536)
    )
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(candidates)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
