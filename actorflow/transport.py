"""Thespian, made to listen only where configured and to take only sealed messages.

Thespian 4.0.1 binds every admin, logger and actor to ``('', port)`` (all
interfaces) and unpickles whatever a connection delivers. ``install`` changes
that at exactly two places of Thespian, once per process and before an actor
system starts, so that every forked admin, logger and actor inherits it:

1. ``IPActorAddress.__init__``: a socket binds to the host it advertises
   (``THESPIAN_BASE_IPADDR``: the worker's own address), not to all interfaces;
2. ``TCPTransport.serializer`` (the module-level pickle that Thespian's TCP
   transport calls to send and to receive): sends are sealed with the cluster
   secret (:mod:`actorflow.security`), and nothing is unpickled before its MAC
   is checked.

Two of Thespian's limits change too, because a peer that is stopped (SIGSTOP) or
cut off accepts connections but never acknowledges: transmits to it time out
after ``TRANSMIT_TIMEOUT`` instead of 5 minutes, and an actor may have
``MAX_PENDING_TRANSMITS`` transmits under way instead of 20, so that a few
stuck ones do not stop everything else it sends.

On top of that, :class:`ClusterTransport` looks at every complete incoming
message before Thespian does: a forged, stale, replayed or oversized one is
dropped, its connection closed, the refusal counted (:func:`refused`) and
logged once per peer address. ``tests/test_security.py`` fails if a Thespian
upgrade moves either place.

Processes get their actor system from :func:`start_worker_system` (a worker's
own admin) or :func:`connect_to_admin` (a command or a joiner talking to an
admin anywhere, which never starts one of its own).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import threading
import types
from datetime import timedelta
from typing import Any

import thespian.system.transport as thespian_transport
from thespian.actors import ActorAddress, ActorSystem
from thespian.system import multiprocTCPBase
from thespian.system.transport import ExternalInterfaceTransportInit, IPBase
from thespian.system.transport import TCPTransport as tcp
from thespian.system.transport import asyncTransportBase as async_base
from thespian.system.transport.streamBuffer import ackDataErrMsg, ackMsg

from actorflow.errors import ClusterError
from actorflow.net import route_address
from actorflow.security import HEADER_SIZE, ClusterSecret, Refused, ReplayGuard

log = logging.getLogger("actorflow.security")

MAX_MESSAGE = 256 * 1024 * 1024  # bytes one message between actors may announce
TRANSMIT_TIMEOUT = timedelta(seconds=15)
MAX_PENDING_TRANSMITS = 200
ADMIN_CAPABILITY = "actorflow.admin_address"  # (host, port) of the admin a client uses

_ACKS = {m.split(b">", 1)[1]: pickle.loads(m.split(b">", 1)[1]) for m in (ackMsg, ackDataErrMsg)}
REASONS = ("forged", "stale", "replayed", "oversized", "unframed")
_warned: set[str] = set()


class _RefusalCounts:
    """Refusals by reason, in memory shared by every process of a worker: created
    before the admin forks, so the admin, its logger and every actor add to it."""

    def __init__(self) -> None:
        self.counts = multiprocessing.RawArray("q", len(REASONS))  # no lock: none to die holding

    def add(self, reason: str) -> None:
        self.counts[REASONS.index(reason) if reason in REASONS else 0] += 1

    def get(self) -> dict[str, int]:
        return {r: int(self.counts[i]) for i, r in enumerate(REASONS) if self.counts[i]}


_refused: _RefusalCounts | None = None


class SealedPickle:
    """Thespian's serializer, sealing what it sends and checking what it takes."""

    def __init__(self) -> None:
        self.secret: ClusterSecret | None = None
        self.guard = ReplayGuard()
        self.checked: bytes | None = None  # admitted by ClusterTransport: MAC verified

    def dumps(self, obj: Any) -> bytes:
        data = pickle.dumps(obj)
        return data if self.secret is None else self.secret.seal(data)

    def loads(self, data: bytes) -> Any:
        if data in _ACKS:  # Thespian's fixed acknowledgements, never unpickled
            return _ACKS[data]
        if self.secret is None:
            return pickle.loads(data)
        if data is not self.checked:
            self.secret.verify(data)  # an acknowledgement buffer, or anything else
        self.checked = None
        return pickle.loads(memoryview(data)[HEADER_SIZE:])


sealed = SealedPickle()
_original_address_init = IPBase.IPActorAddress.__init__


def _bind_where_advertised(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_address_init(self, *args, **kwargs)
    if self.bindname[0] == "":  # Thespian's "all interfaces" for external addresses
        self.bindname = self.sockname


def install(secret: ClusterSecret | None) -> None:
    """Patch Thespian in this process (idempotent); ``secret`` None turns sealing off."""
    global _refused
    if _refused is None:
        _refused = _RefusalCounts()
    sealed.secret = secret
    tcp.serializer = sealed
    IPBase.IPActorAddress.__init__ = _bind_where_advertised
    thespian_transport.DEFAULT_MAX_TRANSMIT_PERIOD = TRANSMIT_TIMEOUT
    async_base.MAX_PENDING_TRANSMITS = MAX_PENDING_TRANSMITS


def installed() -> bool:
    """True if both patches are in place (what the tests check after an upgrade)."""
    return tcp.serializer is sealed and IPBase.IPActorAddress.__init__ is _bind_where_advertised


def refused() -> dict[str, int]:
    """Messages the processes of this worker refused, by reason."""
    return _refused.get() if _refused is not None else {}


class ClusterTransport(tcp.TCPTransport):
    """Thespian's TCP transport, refusing what is not a sealed cluster message."""

    def _handleReadableIncoming(self, inc: Any, has_exclusive_flag: bool = False) -> Any:
        result = super()._handleReadableIncoming(inc, has_exclusive_flag=has_exclusive_flag)
        size = getattr(getattr(result, "_rData", None), "_size", None)
        if size is not None and size > MAX_MESSAGE:
            return self._refuse(result, "oversized", f"it announces {size} bytes")
        return result

    def _addedDataToIncoming(
        self,
        inc: Any,
        skipFinish: bool = False,
        has_exclusive_flag: bool = False,  # noqa: N803
    ) -> Any:
        secret = sealed.secret
        if secret is not None and inc.receivedAllData():
            buf = inc._rData
            if buf._size is None:
                return self._refuse(inc, "unframed", "not a Thespian frame")
            try:
                secret.check(buf._buf, sealed.guard)
            except Refused as exc:
                why = str(exc)
                return self._refuse(inc, why if why in REASONS else "forged", why)
            sealed.checked = buf._buf
        return super()._addedDataToIncoming(
            inc, skipFinish=skipFinish, has_exclusive_flag=has_exclusive_flag
        )

    def _refuse(self, inc: Any, reason: str, why: str) -> None:
        try:
            peer = inc.socket.getpeername()[0]
        except (OSError, AttributeError):
            peer = "?"
        if _refused is not None:
            _refused.add(reason)
        if reason == "replayed":  # a retransmission of ours, or a replay: taken once already
            try:
                inc.socket.send(ackMsg)
            except OSError:
                pass
        elif peer not in _warned:
            _warned.add(peer)
            log.warning(
                "refused a message from %s: %s (cluster messages must be sealed with this "
                "cluster's secret, and fresh); its connection is closed, and further "
                "refusals from it are only counted (actorflow status: messages_refused)",
                peer,
                why,
            )
        inc.close()
        return None


class AdminClientTransport(ClusterTransport):
    """The transport of a process that talks to an admin at ``ADMIN_CAPABILITY``,
    on this host or another, and never starts an admin of its own."""

    def __init__(self, initType: Any, *args: Any) -> None:  # noqa: N803
        super().__init__(initType, *args)
        if isinstance(initType, ExternalInterfaceTransportInit):
            self._adminAddr = self.getAdminAddr(args[0])

    @staticmethod
    def getAdminAddr(capabilities: dict) -> Any:  # noqa: N802
        where = capabilities.get(ADMIN_CAPABILITY)
        if where is None:
            return tcp.TCPTransport.getAdminAddr(capabilities)
        return ActorAddress(IPBase.TCPv4ActorAddress(where[0], where[1], external=True))

    @staticmethod
    def probeAdmin(addr: Any) -> bool:  # noqa: N802
        return True  # "an admin is there": never start one


class _WorkerBase(multiprocTCPBase.ActorSystemBase):
    transportType = ClusterTransport


class _ClientBase(multiprocTCPBase.ActorSystemBase):
    transportType = AdminClientTransport


def start_worker_system(capabilities: dict, log_defs: dict) -> ActorSystem:
    """This worker's own admin (on ``THESPIAN_BASE_IPADDR``:``Admin Port``), started."""
    caps = dict(capabilities)
    base = _WorkerBase(types.SimpleNamespace(capabilities=caps), logDefs=log_defs)
    return ActorSystem(systemBase=base, capabilities=caps, transientUnique=True)


def connect_to_admin(host: str, port: int, timeout: float, local: str | None = None) -> ActorSystem:
    """A client of the admin at ``host:port``; ClusterError if it does not answer in time.

    The client listens for answers on ``local``: by default this host's address on the
    route to ``host``.
    """
    # Thespian takes the address it listens on from the environment.
    os.environ["THESPIAN_BASE_IPADDR"] = local or route_address(host)
    caps = {"Admin Port": port, "Convention Address.IPv4": f"{host}:{port}"}
    caps[ADMIN_CAPABILITY] = (host, port)
    result: list[Any] = []

    def attach() -> None:
        try:
            base = _ClientBase(types.SimpleNamespace(capabilities=caps))
            result.append(ActorSystem(systemBase=base, capabilities=caps, transientUnique=True))
        except Exception as exc:  # Thespian's InvalidActorAddress: nothing answered
            result.append(exc)

    thread = threading.Thread(target=attach, name="actorflow-attach", daemon=True)
    thread.start()
    thread.join(timeout)
    if not result or isinstance(result[0], Exception):
        why = f" ({result[0]})" if result else ""
        msg = (
            f"no actorflow admin answered at {host}:{port} within {timeout:g} s{why}; is the "
            "address right, is the worker running (and not stopped), and does this command "
            "have the cluster's secret?"
        )
        raise ClusterError(msg)
    return result[0]
