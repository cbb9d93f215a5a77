"""Who may talk to a cluster: the cluster secret, sealed messages and stream tokens.

Every message between the processes of a cluster (admins, loggers, actors, cluster
commands) is *sealed*: a MAC over the message and a header that makes it unique,
checked **before** anything is unpickled, so that reaching a port is not enough to
run code in the cluster (Thespian itself unpickles whatever arrives). The key is
the cluster secret, shared the way Erlang shares its cookie: a file only its owner
may read, or an environment variable.

A sealed message::

    b"AF1" | HMAC-SHA256(key, rest) (32) | rest
    rest = sent at, Unix seconds (f64) | sender session (8 random bytes) |
           counter (u64) | pickle

A receiver refuses a message whose MAC is wrong (``forged``), that was sent more
than ``FRESH_FOR`` seconds ago (``stale``: a capture replayed later), or whose
(session, counter) it has taken before (``replayed``). Sessions are per process,
renewed at every fork.

Acknowledged senders prove their claim to a stream with a token derived from the
secret (``stream_token``), answering a fresh challenge from the source, so that
nobody else can close or advance that stream (see :mod:`actorflow.wire`).

>>> s = ClusterSecret(b"k" * 32)
>>> g = ReplayGuard()
>>> sealed = s.seal(b"payload", now=100.0)
>>> s.open(sealed, g, now=101.0)
b'payload'
>>> s.open(sealed, g, now=101.0)
Traceback (most recent call last):
...
actorflow.security.Refused: replayed
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
import stat
import struct
import time

from actorflow.errors import ConfigError

SECRET_FILE = "actorflow.secret"  # in the initializer's --resilience-dir
SECRET_ENV = "ACTORFLOW_CLUSTER_SECRET"
MAGIC = b"AF1"
_HEAD = struct.Struct(">d8sQ")
MAC_SIZE = 32
HEADER_SIZE = len(MAGIC) + MAC_SIZE + _HEAD.size
FRESH_FOR = 120.0  # seconds a sealed message stays acceptable (clocks must agree closer)
REPLAY_WINDOW = 16384  # counters remembered per sending session
SESSION_IDLE = 2 * FRESH_FOR  # a session unheard of for this long is forgotten


class Refused(Exception):
    """A message that is not from the cluster, or not now: the reason is its text."""


class ReplayGuard:
    """Remembers which (session, counter) pairs a process took, within the freshness
    window, so that a message is taken at most once."""

    def __init__(self) -> None:
        self.sessions: dict[bytes, tuple[int, set[int], float]] = {}
        self.checked_at = 0.0

    def admit(self, session: bytes, counter: int, now: float) -> bool:
        """True the first time ``(session, counter)`` is seen."""
        top, seen, _ = self.sessions.get(session, (-1, set(), now))
        if counter <= top - REPLAY_WINDOW or counter in seen:
            return False
        seen.add(counter)
        if counter > top:
            top = counter
        if len(seen) > 2 * REPLAY_WINDOW:
            floor = top - REPLAY_WINDOW
            seen = {c for c in seen if c > floor}
        self.sessions[session] = (top, seen, now)
        if now - self.checked_at > SESSION_IDLE:
            self.checked_at = now
            for s in [s for s, v in self.sessions.items() if now - v[2] > SESSION_IDLE]:
                del self.sessions[s]
        return True


class _Session:
    """This process's sender identity: renewed in every forked child."""

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.id = secrets.token_bytes(8)
        self.counter = itertools.count()


_session = _Session()
os.register_at_fork(after_in_child=_session.renew)


class ClusterSecret:
    """The shared secret of one cluster, and the keys derived from it."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) < 16:
            raise ConfigError("the cluster secret is too short (at least 16 bytes)")
        self.transport_key = hmac.digest(raw, b"actorflow transport v1", "sha256")
        self.stream_key = hmac.digest(raw, b"actorflow stream v1", "sha256")
        self.fingerprint = hashlib.sha256(self.transport_key).hexdigest()[:12]

    def seal(self, payload: bytes, now: float | None = None) -> bytes:
        """``payload`` with the header and MAC that make it a cluster message."""
        head = _HEAD.pack(time.time() if now is None else now, _session.id, next(_session.counter))
        mac = hmac.new(self.transport_key, head, "sha256")
        mac.update(payload)  # no copy of a large payload before the one below
        return b"".join((MAGIC, mac.digest(), head, payload))

    def verify(self, sealed: bytes) -> None:
        """Refused unless ``sealed`` carries a MAC made with this secret."""
        if sealed[:3] != MAGIC or len(sealed) < HEADER_SIZE:
            raise Refused("not a sealed cluster message")
        mac = hmac.digest(self.transport_key, memoryview(sealed)[3 + MAC_SIZE :], "sha256")
        if not hmac.compare_digest(mac, sealed[3 : 3 + MAC_SIZE]):
            raise Refused("forged")

    def check(self, sealed: bytes, guard: ReplayGuard, now: float | None = None) -> None:
        """Refused unless ``sealed`` is authentic, fresh and new to ``guard``."""
        self.verify(sealed)
        sent, session, counter = _HEAD.unpack_from(sealed, 3 + MAC_SIZE)
        now = time.time() if now is None else now
        if abs(now - sent) > FRESH_FOR:
            raise Refused("stale")
        if not guard.admit(session, counter, now):
            raise Refused("replayed")

    def open(self, sealed: bytes, guard: ReplayGuard, now: float | None = None) -> bytes:
        """The payload of an authentic, fresh, new message (else Refused)."""
        self.check(sealed, guard, now)
        return sealed[HEADER_SIZE:]

    # ---- acknowledged streams -------------------------------------------------

    def stream_token(self, stream: str) -> str:
        """What a sender needs to claim ``stream``: hand it to that sender only."""
        return hmac.digest(self.stream_key, stream.encode(), "sha256").hex()


def stream_proof(token: str, stream: str, challenge: str) -> str:
    """A sender's answer to a source's challenge for ``stream``."""
    msg = f"{stream}\0{challenge}".encode()
    return hmac.digest(bytes.fromhex(token), msg, "sha256").hex()


def check_stream_proof(secret: ClusterSecret, stream: str, challenge: str, proof: str) -> bool:
    """True if ``proof`` answers ``challenge`` with the token of ``stream``."""
    expected = stream_proof(secret.stream_token(stream), stream, challenge)
    return hmac.compare_digest(expected, str(proof))


# ---- finding the secret ---------------------------------------------------------


def read_secret_file(path: str) -> ClusterSecret:
    """The secret in ``path``, which only its owner may read."""
    try:
        mode = os.stat(path).st_mode
        with open(path, "rb") as f:
            raw = f.read().strip()
    except OSError as exc:
        raise ConfigError(f"cluster secret file {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        msg = (
            f"cluster secret file {path} may be read by others (mode {stat.S_IMODE(mode):o}); "
            f"make it private: chmod 600 {path}"
        )
        raise ConfigError(msg)
    return ClusterSecret(_decode(raw))


def parse_secret(text: str) -> ClusterSecret:
    """The secret written as ``text`` (hex, as actorflow makes them, or any string)."""
    return ClusterSecret(_decode(text.strip().encode()))


def _decode(raw: bytes) -> bytes:
    try:
        return bytes.fromhex(raw.decode())
    except ValueError:
        return raw


def create_secret_file(path: str) -> ClusterSecret:
    """A new random secret in ``path`` (mode 0600), unless one is there already."""
    raw = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret_file(path)
    with os.fdopen(fd, "wb") as f:
        f.write(raw + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return ClusterSecret(_decode(raw))


def find_secret(
    secret_file: str | None, resilience_dir: str | None, *, create: bool = False
) -> ClusterSecret | None:
    """The cluster secret: ``secret_file``, else ``$ACTORFLOW_CLUSTER_SECRET``, else
    ``actorflow.secret`` in ``resilience_dir`` (created there if ``create``). None if
    there is none."""
    if secret_file:
        return read_secret_file(secret_file)
    env = os.environ.get(SECRET_ENV)
    if env:
        return parse_secret(env)
    if resilience_dir:
        path = os.path.join(resilience_dir, SECRET_FILE)
        if create:
            os.makedirs(resilience_dir, exist_ok=True)
            return create_secret_file(path)
        if os.path.exists(path):
            return read_secret_file(path)
    return None


def missing_secret_hint(resilience_dir: str) -> str:
    """How to give a worker or command on another host the cluster's secret."""
    path = os.path.join(resilience_dir, SECRET_FILE)
    return (
        "copy the initializer's cluster secret (the file actorflow.secret in its "
        f"--resilience-dir) to {path} on this host (chmod 600), or pass "
        f"--cluster-secret-file FILE, or set {SECRET_ENV}"
    )
