"""Real Redis, PostgreSQL and RabbitMQ servers for the connector tests.

Each runs from a temporary folder on a free loopback port, as our own child in its own
process group; ``ready`` waits until it answers (never a fixed sleep) and ``stop``
ends that group (by its id, never by name) and removes the folder. A missing binary
raises ``pytest.skip`` with the package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from actorflow.testing import free_port

PG_BIN = [
    *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True),
    Path("/usr/local/bin"),
    Path("/usr/bin"),
]


def _find(name: str, where: list[Path] | None = None) -> str | None:
    for folder in where or []:
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


class Server:
    """One server process (and its process group) and its folder."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"actorflow-{name}-")
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        self.log = os.path.join(self.dir, "server.log")

    def spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with open(self.log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.dir,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def wait(self, check: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            try:
                if check():
                    return
            except Exception:
                pass
            time.sleep(0.05)
        tail = Path(self.log).read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not get ready; its log:\n{tail}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
            try:  # anything left in its group (Erlang's helpers, postgres' backends)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def redis_server() -> Server:
    binary = _find("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    redis = pytest.importorskip("redis", reason="the redis client (pip: actorflow[connectors])")
    s = Server("redis")
    s.spawn(
        [binary, "--port", str(s.port), "--bind", "127.0.0.1", "--dir", s.dir]
        + ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    )
    s.wait(lambda: redis.Redis("127.0.0.1", s.port, socket_timeout=1).ping(), 30)
    return s


def postgres_server() -> Server:
    initdb, postgres = _find("initdb", PG_BIN), _find("postgres", PG_BIN)
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 (pip: actorflow[connectors])")
    s = Server("postgres")
    data = os.path.join(s.dir, "data")
    env = dict(os.environ)
    user = []
    if os.geteuid() == 0:  # postgres refuses to run as root: a user of its own
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
        shutil.chown(s.dir, "postgres")
        user = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups"]
    subprocess.run(
        [*user, initdb, "-D", data, "-U", "actorflow", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
        env=env,
    )
    s.spawn(
        [*user, postgres, "-D", data, "-p", str(s.port), "-k", s.dir]
        + ["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        env=env,
    )
    s.dsn = f"host=127.0.0.1 port={s.port} user=actorflow dbname=postgres"  # type: ignore[attr-defined]
    s.wait(lambda: psycopg2.connect(s.dsn, connect_timeout=1).close() is None, 30)  # type: ignore[attr-defined]
    return s


def rabbitmq_server() -> Server:
    binary = _find("rabbitmq-server", [Path("/usr/lib/rabbitmq/bin")])
    epmd = _find("epmd")
    if binary is None or epmd is None:
        pytest.skip("rabbitmq-server is not installed (Debian: apt-get install rabbitmq-server)")
    pika = pytest.importorskip("pika", reason="pika (pip: actorflow[connectors])")
    s = Server("rabbitmq")
    epmd_port = free_port()
    env = dict(os.environ)
    env.update(
        HOME=s.dir,
        ERL_EPMD_PORT=str(epmd_port),
        RABBITMQ_NODE_PORT=str(s.port),
        RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
        RABBITMQ_NODENAME=f"actorflow{s.port}@localhost",
        RABBITMQ_DIST_PORT=str(free_port()),
        RABBITMQ_MNESIA_BASE=os.path.join(s.dir, "mnesia"),
        RABBITMQ_LOG_BASE=os.path.join(s.dir, "log"),
        RABBITMQ_PID_FILE=os.path.join(s.dir, "pid"),
        RABBITMQ_CONFIG_FILE=os.path.join(s.dir, "rabbitmq"),
        RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(s.dir, "plugins"),
    )
    Path(s.dir, "plugins").write_text("[].\n")
    # Our own epmd, in the foreground, so it ends with the server instead of lingering.
    s.spawn([epmd, "-port", str(epmd_port), "-address", "127.0.0.1"], env=env)
    s.wait(lambda: _answers(epmd_port), 10)
    s.spawn([binary], env=env)
    params = pika.ConnectionParameters("127.0.0.1", s.port, connection_attempts=1)
    s.wait(lambda: pika.BlockingConnection(params).close() is None, 90)
    s.url = f"amqp://guest:guest@127.0.0.1:{s.port}/%2F"  # type: ignore[attr-defined]
    return s
