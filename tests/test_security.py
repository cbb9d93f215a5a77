"""Who may talk to a cluster: sealed messages, the cluster secret, stream tokens, and
the two places where actorflow changes Thespian (a test here fails if an upgrade
moves them)."""

from __future__ import annotations

import inspect
import os
import pickle
import socket
import stat
import struct
import threading
import time
from pathlib import Path

import psutil
import pytest

from actorflow import transport
from actorflow.control import query_status
from actorflow.errors import ClusterError, ConfigError
from actorflow.security import (
    FRESH_FOR,
    REPLAY_WINDOW,
    SECRET_ENV,
    SECRET_FILE,
    ClusterSecret,
    Refused,
    ReplayGuard,
    check_stream_proof,
    find_secret,
    stream_proof,
)
from actorflow.testing import Cluster, WorkerProcess
from actorflow.tools.send import SendError, send_acked
from actorflow.wire import control_frame, read_control
from tests.conftest import APPS

ALPHABET = str(APPS / "alphabet.py")


class Evil:
    """Unpickling this runs a shell command: what an attacker would send."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- sealed messages ------------------------------------------------------------


def test_a_sealed_message_opens_once_and_only_with_its_secret():
    secret, guard = ClusterSecret(b"s" * 32), ReplayGuard()
    sealed = secret.seal(b"hello", now=1000.0)
    assert secret.open(sealed, guard, now=1001.0) == b"hello"
    with pytest.raises(Refused, match="replayed"):
        secret.open(sealed, guard, now=1001.0)
    with pytest.raises(Refused, match="forged"):
        ClusterSecret(b"t" * 32).open(sealed, ReplayGuard(), now=1001.0)
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(Refused, match="forged"):
        secret.open(tampered, ReplayGuard(), now=1001.0)
    with pytest.raises(Refused, match="stale"):
        secret.open(secret.seal(b"x", now=1000.0), guard, now=1000.0 + FRESH_FOR + 1)
    with pytest.raises(Refused, match="not a sealed"):
        secret.open(pickle.dumps(("addr", "msg")), guard, now=1000.0)


def test_the_replay_guard_takes_late_messages_once_and_stays_bounded():
    guard = ReplayGuard()
    assert guard.admit(b"s", 10, now=0.0)
    assert guard.admit(b"s", 5, now=0.0), "a message that was overtaken is still taken"
    assert not guard.admit(b"s", 5, now=0.0)
    for c in range(11, 3 * REPLAY_WINDOW):
        assert guard.admit(b"s", c, now=0.0)
    assert not guard.admit(b"s", 12, now=0.0), "below the window: refused"
    assert len(guard.sessions[b"s"][1]) <= 2 * REPLAY_WINDOW + 1
    assert guard.admit(b"other", 12, now=0.0), "sessions are separate"


def test_nothing_unsealed_is_unpickled(tmp_path):
    transport.install(ClusterSecret(b"k" * 32))
    marker = tmp_path / "ran"
    with pytest.raises(Refused):
        transport.sealed.loads(pickle.dumps(Evil(marker)))
    assert not marker.exists()
    assert transport.sealed.loads(transport.sealed.dumps(("a", 1))) == ("a", 1)


def test_thespian_still_calls_the_two_patched_places():
    """If a Thespian upgrade stops using them, sealing or binding silently stops."""
    from thespian.system.transport import IPBase
    from thespian.system.transport import TCPTransport as tcp

    transport.install(ClusterSecret(b"k" * 32))
    assert transport.installed()
    src = inspect.getsource(tcp)
    assert "ReceiveBuffer(serializer.loads)" in src  # every received message
    assert "serializer.dumps)" in inspect.getsource(tcp.TCPTransport.serializer)
    for name in ("_addedDataToIncoming", "_handleReadableIncoming"):
        assert name in tcp.TCPTransport.__dict__
    assert "self.socket.bind(*templateAddr.addressDetails.bindArgs)" in src
    addr = IPBase.TCPv4ActorAddress("127.0.0.1", 5000, external=True)
    assert addr.bindname == ("127.0.0.1", 5000), "binds to its own address, not all"


def test_stream_proofs():
    secret = ClusterSecret(b"k" * 32)
    token = secret.stream_token("votes")
    assert check_stream_proof(secret, "votes", "c1", stream_proof(token, "votes", "c1"))
    assert not check_stream_proof(secret, "votes", "c2", stream_proof(token, "votes", "c1"))
    other = secret.stream_token("other")
    assert not check_stream_proof(secret, "votes", "c1", stream_proof(other, "votes", "c1"))


def test_finding_the_secret(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert find_secret(None, str(tmp_path)) is None
    created = find_secret(None, str(tmp_path), create=True)
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = find_secret(None, str(tmp_path), create=True)
    assert again.fingerprint == created.fingerprint, "a restarted initializer keeps it"
    monkeypatch.setenv(SECRET_ENV, "ab" * 32)
    from_env = find_secret(None, str(tmp_path))
    assert from_env.fingerprint != created.fingerprint, "the environment wins over the dir"
    other = tmp_path / "other.secret"
    other.write_text("cd" * 32)
    other.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        find_secret(str(other), None)
    other.chmod(0o600)
    assert find_secret(str(other), None).fingerprint not in (
        created.fingerprint,
        from_env.fingerprint,
    )


# ---- against real workers ---------------------------------------------------------


def _worker_pids(pgids: list[int], commands: set[int]) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) in pgids or p.pid in commands:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


def _listening(pgids: list[int], commands: set[int]) -> dict[tuple[str, int], set[int]]:
    """Every listening socket of the workers' processes (the worker commands and their
    actor groups), with the pids that hold it."""
    out: dict[tuple[str, int], set[int]] = {}
    for p in _worker_pids(pgids, commands):
        try:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    out.setdefault((c.laddr.ip, c.laddr.port), set()).add(p.pid)
        except psutil.Error:
            continue
    return out


def _refused(control: int) -> int:
    status = query_status(("127.0.0.1", control))
    return sum(status.get("messages_refused", {}).values())


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_every_port_listens_on_its_address_and_no_pickle_runs(workers, tmp_path, collector):
    cluster = Cluster(
        ALPHABET, workers, [collector.port], source_name="alphabet", log_dir=str(tmp_path)
    )
    with cluster:
        cluster.start()
        pgids = [w.pgid for w in cluster.workers]
        commands = {w.proc.pid for w in cluster.workers}
        ports = _listening(pgids, commands)
        assert ports and {host for host, _ in ports} == {"127.0.0.1"}, ports
        marker = tmp_path / "ran"
        payload = pickle.dumps(Evil(marker))
        frame = b"%d>" % len(payload) + payload
        # The worker command's own client socket is read only while it starts up: what
        # arrives there later is never read at all. Every other Thespian port refuses.
        reading = [port for (_, port), pids in ports.items() if not pids & commands]
        thespian_ports = [port for port in reading if port not in cluster.inputs]
        before = _refused(cluster.control)
        for _, port in sorted(ports):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(frame)
                if port in thespian_ports:
                    s.settimeout(5)
                    try:
                        assert s.recv(100) == b"", "a refused connection is closed"
                    except ConnectionResetError:
                        pass
        deadline = time.monotonic() + 20
        while _refused(cluster.control) < before + len(thespian_ports):
            assert time.monotonic() < deadline, "the refusals were not counted"
            time.sleep(0.2)
        assert not marker.exists(), "a pickle from the network ran"
        assert query_status(("127.0.0.1", cluster.control))["processing_messages"]
        assert "refused a message from 127.0.0.1" in cluster.workers[0].log()


@pytest.mark.integration
def test_a_worker_with_another_secret_is_refused(tmp_path, collector, monkeypatch):
    cluster = Cluster(
        ALPHABET, 2, [collector.port], source_name="alphabet", log_dir=str(tmp_path)
    )
    with cluster:
        first = cluster.start_worker(0)
        env = dict(os.environ, **{SECRET_ENV: "ee" * 32})
        stranger = WorkerProcess(
            ALPHABET,
            [*cluster.args(1), "--join-timeout", "5"],
            env=env,
            log_path=str(tmp_path / "stranger.log"),
        ).start()
        cluster.workers.append(stranger)
        assert stranger.proc.wait(60) != 0
        assert "secret" in stranger.log()
        assert first.wait_log(r"refused a message from 127\.0\.0\.1", timeout=10)
        cluster.start_worker(1)
        for w in (first, cluster.workers[-1]):
            w.wait_ready(60)


@pytest.mark.integration
def test_the_default_secret_file_serves_workers_sharing_a_folder(tmp_path, collector):
    """No secret given: the initializer makes one in its --resilience-dir, and a joiner
    with the same folder (the design document's command lines) finds it; a joiner with
    another folder and no secret refuses to start, saying how to copy it."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    shared = tmp_path / "shared"
    cluster = Cluster(
        ALPHABET, 2, [collector.port], source_name="alphabet", log_dir=str(tmp_path)
    )
    with cluster:
        args = [[*cluster.args(i), "--resilience-dir", str(shared)] for i in range(2)]
        lonely = WorkerProcess(
            ALPHABET,
            [*cluster.args(1), "--resilience-dir", str(tmp_path / "elsewhere")],
            env=env,
            log_path=str(tmp_path / "lonely.log"),
        )
        for i, a in enumerate(args):
            w = WorkerProcess(ALPHABET, a, env=env, log_path=str(tmp_path / f"w{i}.log"))
            cluster.workers.append(w.start())
            if i == 0:
                cluster.workers.append(lonely.start())
                assert lonely.proc.wait(60) != 0
                assert "copy the initializer's cluster secret" in lonely.log()
        for w in cluster.workers:
            if w is not lonely:
                w.wait_ready(60)
        assert stat.S_IMODE((shared / SECRET_FILE).stat().st_mode) == 0o600


def _frames(n: int) -> list[bytes]:
    return [struct.pack(">IsI", 5, b"abcdefghij"[i % 10 : i % 10 + 1], 1) for i in range(n)]


@pytest.mark.integration
def test_nobody_else_can_take_over_an_acknowledged_stream(tmp_path, collector):
    cluster = Cluster(
        ALPHABET,
        1,
        [collector.port],
        source_name="alphabet",
        log_dir=str(tmp_path),
        extra=["--time-between-checkpoints", "0.3"],
    )
    with cluster:
        cluster.start()
        port = cluster.inputs[0]
        frames = _frames(3000)
        result: dict = {}

        def real_sender() -> None:
            result.update(
                send_acked("127.0.0.1", port, frames, stream="votes", batch_size=50,
                           interval_ms=5, log=None)
            )

        sender = threading.Thread(target=real_sender, daemon=True)
        sender.start()
        for attempt in ("no proof", "wrong proof"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(control_frame({"hello": 1, "stream": "votes"}))
                buf = b""
                while True:
                    msg, _ = read_control(buf)
                    if msg is not None:
                        break
                    buf += s.recv(4096)
                assert "challenge" in msg, msg
                if attempt == "wrong proof":
                    s.sendall(control_frame({"proof": "00" * 32}))
                else:
                    s.sendall(_frames(1)[0] * 100)  # data instead of the proof
                s.settimeout(10)
                rest = b""
                while chunk := s.recv(4096):
                    rest += chunk
                assert b"wrong token" in rest or rest == b""
        with pytest.raises(SendError, match="wrong token"):
            send_acked("127.0.0.1", port, frames[:10], stream="votes", token="11" * 32, log=None)
        sender.join(120)
        assert result.get("acked") == len(frames)
        status = query_status(("127.0.0.1", cluster.control))
        source = next(a for k, a in status["actors"].items() if k.startswith("source"))
        assert source["streams_refused"] >= 2
        assert source["streams"]["votes"] == len(frames), "the impostors advanced the stream"
        want = {chr(ord("a") + i): 300 for i in range(10)}
        deadline = time.monotonic() + 30
        got: dict[str, int] = {}
        while time.monotonic() < deadline:
            got = {}
            for line in collector.lines():
                k, _, v = line.strip().partition(" => ")
                got[k] = int(v)
            if got == want:
                break
            time.sleep(0.1)
        assert got == want


@pytest.mark.integration
def test_a_command_without_the_secret_is_refused_in_time(tmp_path, collector):
    cluster = Cluster(ALPHABET, 1, [collector.port], source_name="alphabet",
                      log_dir=str(tmp_path))
    with cluster:
        cluster.start()
        started = time.monotonic()
        with pytest.raises(ClusterError, match="secret"):
            query_status(("127.0.0.1", cluster.control), timeout=4,
                         secret=ClusterSecret(b"w" * 32))
        assert time.monotonic() - started < 15
        assert query_status(("127.0.0.1", cluster.control))["processing_messages"]


def test_a_command_against_a_stranger_times_out_and_starts_no_admin(tmp_path):
    """A port where something else listens (or a stopped initializer): the command says
    so within its timeout and leaves nothing behind (it never starts an admin)."""
    import subprocess
    import sys

    stranger = socket.create_server(("127.0.0.1", 0))
    port = stranger.getsockname()[1]
    taken: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = stranger.accept()
            except OSError:
                return
            taken.append(conn)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    try:
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "actorflow", "status", "--control", f"127.0.0.1:{port}",
             "--timeout", "3"],
            capture_output=True, text=True, timeout=60,
        )
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "no actorflow admin answered" in proc.stderr
        assert time.monotonic() - started < 20
        listeners = {c.pid for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
        assert listeners <= {os.getpid()}, "the command left an admin of its own"
    finally:
        stranger.close()
        for conn in taken:
            conn.close()
