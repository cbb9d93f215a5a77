"""End-to-end tests on one worker: real worker processes with their own Thespian admin,
a real TCP sender and receiver on free loopback ports, results checked per key
against values computed here."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict

import pytest

from actorflow.control import query_status
from actorflow.testing import free_port
from actorflow.tools.gen import alphabet_frames, word_counts, word_lines
from actorflow.tools.send import send
from tests.conftest import APPS, ROOT, worker_args

pytestmark = pytest.mark.integration


def framed(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def expected_alphabet(frames: list[bytes]) -> dict[str, list[int]]:
    """Per letter, the running totals the app must output, in order."""
    running: dict[str, int] = defaultdict(int)
    out: dict[str, list[int]] = defaultdict(list)
    for f in frames:
        _, letter, votes = struct.unpack(">IsI", f)
        running[letter.decode()] += votes
        out[letter.decode()].append(running[letter.decode()])
    return out


def per_key(lines: list[str]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = defaultdict(list)
    for line in lines:
        key, _, value = line.rstrip("\n").partition(" => ")
        out[key].append(int(value.split()[0]))
    return out


def control_of(args: list[str]) -> tuple[str, int]:
    host, port = args[args.index("--control") + 1].rsplit(":", 1)
    return host, int(port)


def test_alphabet_running_totals_per_letter(start_worker, collector):
    in_port = free_port()
    start_worker("alphabet.py", *worker_args(in_port, collector.port))
    frames = alphabet_frames(30_000, seed=7)
    send("127.0.0.1", in_port, frames, log=None)
    assert collector.wait_for(len(frames), 60), f"got {collector.receiver.messages}"
    # Per-key order and values: every letter's outputs are exactly its running totals.
    assert per_key(collector.lines()) == expected_alphabet(frames)


def test_word_count_counts_every_occurrence(start_worker, collector):
    in_port = free_port()
    start_worker("word_count.py", *worker_args(in_port, collector.port))
    lines = word_lines(3_000, seed=3)
    expected = word_counts(lines)
    send("127.0.0.1", in_port, [framed(line.encode()) for line in lines], log=None)
    total = sum(expected.values())
    assert collector.wait_for(total, 60), f"got {collector.receiver.messages} of {total}"
    got = per_key(collector.lines())
    assert {w: c[-1] for w, c in got.items()} == expected
    assert all(c == list(range(1, len(c) + 1)) for c in got.values())


def test_many_connections_and_status(start_worker, collector):
    """Several senders at once; status reports what ran where and the per-stage counts."""
    in_port = free_port()
    args = worker_args(in_port, collector.port)
    start_worker("alphabet.py", *args)
    chunks = [alphabet_frames(5_000, seed=s, letters="abcdef"[s:]) for s in range(4)]
    threads = [
        threading.Thread(target=send, args=("127.0.0.1", in_port, c), kwargs={"log": None})
        for c in chunks
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert collector.wait_for(20_000, 60)
    totals = per_key(collector.lines())
    want: dict[str, int] = defaultdict(int)
    for c in chunks:
        for f in c:
            _, letter, votes = struct.unpack(">IsI", f)
            want[letter.decode()] += votes
    assert {k: v[-1] for k, v in totals.items()} == want
    status = query_status(control_of(args))
    assert status["processing_messages"] is True
    assert status["worker_names"] == ["w1"] and status["worker_count"] == 1
    kinds = {a["kind"] for a in status["workers"]["w1"]}
    assert kinds == {"source", "router", "state", "sink"}
    state = next(v for k, v in status["actors"].items() if k.startswith("state"))
    assert state["records_in"] == 20_000 and state["keys"] == len(want)


def test_script_form_with_config_file(tmp_path, collector):
    """``python apps/alphabet.py -c FILE`` runs a worker; the command line overrides the file."""
    in_port = free_port()
    conf = tmp_path / "alphabet.conf"
    conf.write_text(
        f"in = alphabet@127.0.0.1:{free_port()}\n"
        f"out = 127.0.0.1:{collector.port}\n"
        f"control = 127.0.0.1:{free_port()}\n"
        "topology-initializer = true\nworker-count = 1\nworker-name = scripted\n"
        f"resilience-dir = {tmp_path}\n"
    )
    from actorflow.testing import WorkerProcess

    proc = subprocess.Popen(
        [
            sys.executable,
            str(APPS / "alphabet.py"),
            "-c",
            str(conf),
            "--in",
            f"alphabet@127.0.0.1:{in_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    w = WorkerProcess("", [])
    w.proc = proc
    import threading as _t

    _t.Thread(target=w._read_stdout, daemon=True).start()
    try:
        line = w.wait_ready(60)
        assert "scripted" in line and f"127.0.0.1:{in_port}" in line
        frames = alphabet_frames(2_000, seed=1)
        send("127.0.0.1", in_port, frames, log=None)
        assert collector.wait_for(2_000, 30)
        assert per_key(collector.lines()) == expected_alphabet(frames)
    finally:
        w.stop()


def test_user_errors_are_counted_and_skipped(tmp_path, start_worker, collector):
    app = tmp_path / "picky.py"
    app.write_text(
        "import struct\n"
        "import actorflow as wallaroo\n"
        "def application_setup(args):\n"
        "    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]\n"
        "    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]\n"
        "    return wallaroo.build_application('picky', wallaroo.source(name,\n"
        "        wallaroo.TCPSourceConfig(name, host, port, decode))\n"
        "        .to(check).key_by(first).to(count)\n"
        "        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode)))\n"
        "@wallaroo.decoder(header_length=4, length_fmt='>I')\n"
        "def decode(b):\n    return b.decode()\n"
        "@wallaroo.computation(name='check')\n"
        "def check(s):\n"
        "    if s.startswith('bad'):\n        raise ValueError('refusing ' + s)\n"
        "    return s\n"
        "@wallaroo.key_extractor\n"
        "def first(s):\n    return s[0]\n"
        "class Count:\n    n = 0\n"
        "@wallaroo.state_computation(name='count', state=Count)\n"
        "def count(s, c):\n"
        "    if s == 'xboom':\n        raise KeyError('boom')\n"
        "    c.n += 1\n    return (s[0], c.n)\n"
        "@wallaroo.encoder\n"
        "def encode(t):\n"
        "    line = ('%s => %d' % t).encode()\n"
        "    return struct.pack('>I', len(line)) + line\n"
    )
    in_port = free_port()
    args = worker_args(in_port, collector.port)
    w = start_worker(str(app), *args)
    words = ["apple", "bad1", "avocado", "xboom", "banana", "bad2", "xray", "berry"]
    send("127.0.0.1", in_port, [framed(x.encode()) for x in words], log=None)
    assert collector.wait_for(5, 30)
    assert per_key(collector.lines()) == {"a": [1, 2], "b": [1, 2], "x": [1]}
    assert w.wait_log(r"step 'check'.*key None.*ValueError: refusing bad1", 10), w.log()
    assert w.wait_log(r"step 'count'.*key 'x'.*KeyError", 10), w.log()
    status = query_status(control_of(args))
    errors = {k.split("@")[0]: v["errors"] for k, v in status["actors"].items()}
    assert errors["router1"] == 2 and sum(errors.values()) == 3


def test_oversize_and_garbage_frames_close_only_that_connection(start_worker, collector):
    in_port = free_port()
    args = worker_args(in_port, collector.port, "--max-frame-size", "1024")
    w = start_worker("alphabet.py", *args)
    good = socket.create_connection(("127.0.0.1", in_port))
    bad = socket.create_connection(("127.0.0.1", in_port))
    try:
        good.sendall(struct.pack(">IsI", 5, b"a", 3))
        assert collector.wait_for(1, 30)
        bad.sendall(struct.pack(">I", 1 << 30) + b"x" * 100)  # announces 1 GiB
        assert w.wait_log(r"announces 1073741824 bytes, over the limit of 1024", 15), w.log()
        bad.settimeout(10)
        assert bad.recv(10) == b""  # the worker closed the bad connection
        good.sendall(struct.pack(">IsI", 5, b"a", 4))
        assert collector.wait_for(2, 30)
        assert collector.lines() == ["a => 3\n", "a => 7\n"]
        # Garbage: frames the decoder rejects, many in a row.
        bad2 = socket.create_connection(("127.0.0.1", in_port))
        bad2.sendall(framed(b"??") * 200)
        bad2.settimeout(10)
        assert bad2.recv(10) == b""
        bad2.close()
        assert w.wait_log(r"could not be decoded; closing it as garbage", 10)
        good.sendall(struct.pack(">IsI", 5, b"b", 1))
        assert collector.wait_for(3, 30)
    finally:
        good.close()
        bad.close()


def test_sink_waits_for_late_receiver_and_keeps_output(start_worker):
    """The receiver starts after the data: the sink reconnects and loses nothing."""
    from tests.conftest import Collector

    in_port = free_port()
    late = Collector()
    w = start_worker("alphabet.py", *worker_args(in_port, late.port))
    frames = alphabet_frames(5_000, seed=5)
    send("127.0.0.1", in_port, frames, log=None)
    assert w.wait_log(r"is not reachable", 10)
    late.receiver.start()
    try:
        assert late.wait_for(5_000, 30), f"got {late.receiver.messages}"
        assert per_key(late.lines()) == expected_alphabet(frames)
    finally:
        late.receiver.stop()


def test_back_pressure_bounds_buffers_when_receiver_stalls(start_worker):
    """A receiver that stops reading stalls the sender; nothing grows without bound or is lost."""
    out_port = free_port()
    listener = socket.create_server(("127.0.0.1", out_port))
    listener.settimeout(30)
    in_port = free_port()
    args = worker_args(in_port, out_port, "--sink-buffer", str(64 * 1024))
    start_worker("alphabet.py", *args)
    sink_conn, _ = listener.accept()
    n = 1_000_000
    frames = alphabet_frames(n, seed=11)
    sender = threading.Thread(
        target=send, args=("127.0.0.1", in_port, frames), kwargs={"log": None}, daemon=True
    )
    sender.start()
    # Wait until the pipeline stops moving while the receiver reads nothing.
    control = control_of(args)
    last, steady = -1, 0
    deadline = time.monotonic() + 60
    while steady < 3 and time.monotonic() < deadline:
        status = query_status(control)
        ingested = sum(
            v["records_in"] for k, v in status["actors"].items() if k.startswith("source")
        )
        steady = steady + 1 if ingested == last else 0
        last = ingested
        time.sleep(0.3)
    assert steady >= 3, "the pipeline never stalled"
    assert sender.is_alive(), "the sender finished although the receiver read nothing"
    buffered = sum(v["buffered"] for v in status["actors"].values())
    held = sum(v.get("bytes_held", 0) for v in status["actors"].values())
    assert last < n
    # Bounded by one socket read at the source plus, per link, the window of batches that
    # may arrive after the receiver stopped acknowledging (window 4 + 1, batch 4000).
    assert buffered <= 128 * 1024 // 9 + 3 * 5 * 4000, buffered
    assert held <= 64 * 1024 + 4 * 4000 * 20, held
    # Now read everything: every record arrives, in order per key.
    got: list[bytes] = []
    buf = b""
    sink_conn.settimeout(30)
    while len(got) < n:
        data = sink_conn.recv(1 << 20)
        assert data, f"sink closed after {len(got)} outputs"
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = struct.unpack_from(">I", buf, pos)
            if len(buf) - pos - 4 < size:
                break
            got.append(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
        buf = buf[pos:]
    sender.join(30)
    sink_conn.close()
    listener.close()
    assert per_key([g.decode() for g in got]) == expected_alphabet(frames)


def test_shutdown_leaves_no_process_or_port(start_worker, collector):
    in_port = free_port()
    args = worker_args(in_port, collector.port)
    w = start_worker("alphabet.py", *args)
    pgid = w.pgid
    assert pgid is not None
    code = w.stop()
    assert code == 0
    from tests.conftest import group_alive

    assert not group_alive(pgid)
    for port in (in_port, control_of(args)[1]):
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free again


def test_worker_command_killed_takes_its_actors_along(start_worker, collector):
    """SIGKILL on the worker command: its guard ends the daemonized actor processes."""
    in_port = free_port()
    w = start_worker("alphabet.py", *worker_args(in_port, collector.port))
    pgid = w.pgid
    w.proc.kill()
    w.proc.wait(10)
    from tests.conftest import group_alive

    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--worker-count", "2"], "needs its own --worker-name"),
        (["--bogus-flag-for-app"], None),  # passes through to the app: not an error
    ],
)
def test_flags(args, message, start_worker, collector):
    base = worker_args(free_port(), collector.port)
    if message is not None:
        base = [a for a in base if a not in ("--topology-initializer",)]
        i = base.index("--worker-name")
        del base[i : i + 2]
        i = base.index("--worker-count")
        del base[i : i + 2]
    if message is None:
        w = start_worker("alphabet.py", *base, *args)
        assert "ready" in w.ready_line
        return
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actorflow",
            "worker",
            "--app",
            str(APPS / "alphabet.py"),
            *base,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr


def test_startup_failures_are_clear_and_leave_nothing(tmp_path, collector):
    broken = tmp_path / "broken.py"
    broken.write_text("import actorflow\nraise RuntimeError('no such database')\n")
    cases = [
        (str(broken), worker_args(free_port(), collector.port), "no such database"),
        (str(APPS / "alphabet.py"), [*worker_args(free_port(), collector.port)], None),
    ]
    # Port already in use for the source.
    busy = socket.create_server(("127.0.0.1", 0))
    busy_port = busy.getsockname()[1]
    cases[1] = (
        str(APPS / "alphabet.py"),
        worker_args(busy_port, collector.port),
        f"cannot listen on 127.0.0.1:{busy_port}",
    )
    # Control port in use.
    busy2 = socket.create_server(("127.0.0.1", 0))
    args = worker_args(free_port(), collector.port)
    args[args.index("--control") + 1] = f"127.0.0.1:{busy2.getsockname()[1]}"
    cases.append((str(APPS / "alphabet.py"), args, "the port is in use"))
    try:
        for app, argv, message in cases:
            proc = subprocess.run(
                [sys.executable, "-m", "actorflow", "worker", "--app", app, *argv],
                capture_output=True,
                text=True,
                timeout=90,
            )
            assert proc.returncode != 0, proc.stdout
            assert message in proc.stderr, proc.stderr
            for line in proc.stdout.splitlines():
                assert "ready" not in line
    finally:
        busy.close()
        busy2.close()
    # Nothing is left listening on the control ports of the failed workers.
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(broken) not in out
