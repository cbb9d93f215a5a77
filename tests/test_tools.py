"""Tests for the test tools (framing, gen, send, receive) over real loopback sockets.

The tools are what every end-to-end test and benchmark trusts to say what went in and
what came out, so these tests compare the bytes received with the bytes sent, run the
tools both in-process and as `python -m` subprocesses, and wait on readiness lines
("listening on", "waiting for") rather than sleeping.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actorflow.tools import gen, receive, send
from actorflow.tools.framing import (
    FrameReader,
    FrameTooLarge,
    format_address,
    frame,
    parse_address,
    split_frames,
)
from actorflow.tools.gen import (
    VOCABULARY,
    alphabet_decode,
    alphabet_frames,
    alphabet_totals,
    normalise_word,
    word_counts,
    word_lines,
)
from actorflow.tools.receive import Receiver
from actorflow.tools.send import SendError, load_frames

REPO = Path(__file__).resolve().parents[1]
LOCAL = "127.0.0.1"

pytestmark = pytest.mark.timeout(60)


# -- helpers ------------------------------------------------------------------------------


class Tool:
    """A tool run as `python -m actorflow.tools.NAME`, its stderr read line by line."""

    def __init__(self, name: str, *argv: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(
            [sys.executable, "-m", f"actorflow.tools.{name}", *argv],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        self._stdout = b""
        self._threads = [
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._read_stdout, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stderr(self) -> None:
        assert self.popen.stderr is not None
        for raw in self.popen.stderr:
            line = raw.decode(errors="replace")
            self._stderr.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def _read_stdout(self) -> None:
        assert self.popen.stdout is not None
        self._stdout = self.popen.stdout.read()

    def wait_line(self, prefix: str, timeout: float = 15.0) -> str:
        """Return the first new stderr line starting with `prefix`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line; stderr: {self.stderr!r}") from None
            if line is None:
                raise AssertionError(f"exited before {prefix!r}; stderr: {self.stderr!r}")
            if line.startswith(prefix):
                return line.rstrip("\n")

    def wait_listening(self) -> int:
        """Wait for receive's readiness line and return the bound port."""
        line = self.wait_line("listening on ")
        return parse_address(line.removeprefix("listening on "))[1]

    def finish(self, timeout: float = 30.0) -> int:
        """Wait for the exit and for all output; return the exit code."""
        rc = self.popen.wait(timeout)
        for t in self._threads:
            t.join(timeout)
        return rc

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    @property
    def stdout(self) -> bytes:
        return self._stdout

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait()
        for stream in (self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def tool() -> Iterator[Callable[..., Tool]]:
    """Start tool subprocesses; every one is killed at teardown."""
    started: list[Tool] = []

    def start(name: str, *argv: str) -> Tool:
        t = Tool(name, *argv)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    """Start in-process Receivers on free ports; every one is stopped at teardown."""
    started: list[Receiver] = []

    def start(**kwargs: object) -> Receiver:
        kwargs.setdefault("log", None)
        r = Receiver(LOCAL, kwargs.pop("port", 0), **kwargs)  # type: ignore[arg-type]
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


class Collect:
    """A Receiver sink that keeps what it is given (payload lists or raw bytes)."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.raw = bytearray()

    def __call__(self, data: list[bytes] | bytes) -> None:
        if isinstance(data, list):
            self.payloads.extend(data)
        else:
            self.raw += data


@pytest.fixture
def reserved_port() -> Iterator[socket.socket]:
    """A socket bound to a free port but not listening: connecting to it is refused."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((LOCAL, 0))
    yield s
    s.close()


def write_frames(path: Path, frames: list[bytes]) -> Path:
    path.write_bytes(b"".join(frames))
    return path


def last_json(text: str | bytes) -> dict:
    if isinstance(text, bytes):
        text = text.decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON summary in {text!r}"
    return json.loads(lines[-1])


# -- framing ------------------------------------------------------------------------------


def test_frame_has_big_endian_length_header() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert frame(b"") == b"\x00\x00\x00\x00"
    assert frame(b"x" * 258)[:4] == b"\x00\x00\x01\x02"


def test_reader_splits_any_chunking_into_the_same_payloads() -> None:
    payloads = [b"", b"a", b"hello", b"\x00\x00\x00\x09", b"z" * 300, b"", b"end"]
    stream = b"".join(frame(p) for p in payloads)
    for size in range(1, len(stream) + 1):
        reader = FrameReader()
        got: list[bytes] = []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i : i + size])
        assert got == payloads, f"chunk size {size}"
        assert reader.pending == 0


def test_reader_keeps_an_incomplete_frame_until_it_completes() -> None:
    reader = FrameReader()
    assert reader.feed(frame(b"one") + frame(b"two")[:5]) == [b"one"]
    assert reader.pending == 5
    assert reader.feed(b"wo" + frame(b"three")[:2]) == [b"two"]
    assert reader.pending == 2
    assert reader.feed(frame(b"three")[2:]) == [b"three"]
    assert reader.pending == 0


def test_reader_gathers_a_large_frame_from_small_chunks() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    stream = frame(payload) + frame(b"after")
    reader = FrameReader()
    got: list[bytes] = []
    for i in range(0, len(stream), 1000):
        got += reader.feed(stream[i : i + 1000])
    assert got == [payload, b"after"]


def test_reader_rejects_a_frame_over_the_limit_naming_size_and_limit() -> None:
    reader = FrameReader(max_frame=100)
    assert reader.feed(frame(b"x" * 100)) == [b"x" * 100]
    with pytest.raises(FrameTooLarge, match=r"101 bytes.*limit of 100") as info:
        reader.feed(frame(b"before") + b"\x00\x00\x00\x65")
    assert isinstance(info.value, ValueError)
    assert info.value.payloads == [b"before"]
    with pytest.raises(FrameTooLarge, match=str(2**32 - 1)):
        FrameReader().feed(b"\xff\xff\xff\xff")


def test_reader_splits_a_large_stream_in_chunks() -> None:
    frames = alphabet_frames(200_000)
    stream = b"".join(frames)
    reader = FrameReader()
    got: list[bytes] = []
    for i in range(0, len(stream), 65531):  # chunk edges fall inside frames
        got.extend(reader.feed(stream[i : i + 65531]))
    assert got == [f[4:] for f in frames]


def test_split_frames_reports_leftover_bytes() -> None:
    assert split_frames(frame(b"a") + frame(b"bc")[:3]) == ([b"a"], 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", (LOCAL, 7000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:80", ("::1", 80)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["7000", "host:", "host:port", "host:70000", ":7000"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_parse_address_default_host_and_format() -> None:
    assert parse_address(":9", default_host="0.0.0.0") == ("0.0.0.0", 9)
    assert format_address("::1", 5) == "[::1]:5"
    assert format_address(LOCAL, 5) == "127.0.0.1:5"


# -- gen ----------------------------------------------------------------------------------


def test_alphabet_frames_layout_and_determinism() -> None:
    frames = alphabet_frames(2000, seed=7)
    assert frames == alphabet_frames(2000, seed=7)
    assert frames != alphabet_frames(2000, seed=8)
    letters = set()
    for f in frames:
        assert len(f) == 9 and f[:4] == b"\x00\x00\x00\x05"
        letter, votes = alphabet_decode(f)
        assert letter in string.ascii_lowercase and 1 <= votes <= 10
        assert f[4:5] == letter.encode() and int.from_bytes(f[5:], "big") == votes
        letters.add(letter)
    assert letters == set(string.ascii_lowercase)
    assert {alphabet_decode(f)[1] for f in frames} == set(range(1, 11))
    assert {alphabet_decode(f)[0] for f in alphabet_frames(200, letters="xy")} == {"x", "y"}
    with pytest.raises(ValueError):
        alphabet_frames(1, letters="é")


def test_alphabet_totals_sum_votes_per_letter() -> None:
    msgs = [
        frame(b"a" + (3).to_bytes(4, "big")),
        frame(b"b" + (10).to_bytes(4, "big")),
        frame(b"a" + (4).to_bytes(4, "big")),
    ]
    assert alphabet_totals(msgs) == {"a": 7, "b": 10}
    assert alphabet_totals([m[4:] for m in msgs]) == {"a": 7, "b": 10}  # payloads too
    frames = alphabet_frames(5000)
    totals = alphabet_totals(frames)
    assert sum(totals.values()) == sum(int.from_bytes(f[5:], "big") for f in frames)


def test_word_lines_are_varied_text_over_the_vocabulary() -> None:
    lines = word_lines(500, seed=3)
    assert lines == word_lines(500, seed=3) and lines != word_lines(500, seed=4)
    vocabulary = set(VOCABULARY)
    assert 150 <= len(vocabulary) <= 300
    for line in lines:
        tokens = line.split()
        assert 3 <= len(tokens) <= 12 and "\n" not in line
        assert all(normalise_word(t) in vocabulary for t in tokens)
    text = "".join(lines)
    for mark in [",", ".", "!", '"']:
        assert mark in text
    assert any(c.isupper() for c in text)
    raw = {t for line in lines for t in line.split()}
    assert len(raw) > len({normalise_word(t) for t in raw})  # normalising matters


def test_word_counts_normalise_case_and_punctuation() -> None:
    assert word_counts(['The cat, "the" CAT!', "cat."]) == {"the": 2, "cat": 3}
    lines = word_lines(300)
    assert sum(word_counts(lines).values()) == sum(len(line.split()) for line in lines)


def test_gen_cli_writes_the_library_output(tool: Callable[..., Tool], tmp_path: Path) -> None:
    alpha, words = tmp_path / "alpha.bin", tmp_path / "words.txt"
    t = tool("gen", "alphabet", "--messages", "1000", "--seed", "5", "--output", str(alpha))
    assert t.finish() == 0, t.stderr
    assert alpha.read_bytes() == b"".join(alphabet_frames(1000, seed=5))
    assert gen.read_alphabet_file(str(alpha)) == alphabet_frames(1000, seed=5)
    assert gen._standalone(["words", "--messages", "40", "--output", str(words)]) == 0
    assert words.read_text() == "".join(line + "\n" for line in word_lines(40))
    assert (
        gen._standalone(["alphabet", "--messages", "3", "--letters", "q", "--output", str(alpha)])
        == 0
    )
    assert set(alphabet_totals(gen.read_alphabet_file(str(alpha)))) == {"q"}


# -- load_frames --------------------------------------------------------------------------


def test_load_frames_framed_and_newlines(tmp_path: Path) -> None:
    frames = [frame(b"a"), frame(b""), frame(b"xyz" * 100)]
    assert load_frames(str(write_frames(tmp_path / "f.bin", frames)), "framed") == frames
    text = tmp_path / "t.txt"
    text.write_bytes(b"one\r\ntwo\n\nthree")
    assert load_frames(str(text), "newlines") == [  # blank lines skipped, as Giles did
        frame(b"one"),
        frame(b"two"),
        frame(b"three"),
    ]
    text.write_bytes(b"one\ntwo\n")
    assert load_frames(str(text), "newlines") == [frame(b"one"), frame(b"two")]


def test_load_frames_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(frame(b"good") + frame(b"cut short")[:-2])
    with pytest.raises(SendError, match="byte offset 8"):
        load_frames(str(bad), "framed")
    with pytest.raises(SendError, match="missing"):
        load_frames(str(tmp_path / "missing"), "framed")


# -- send and receive in-process ----------------------------------------------------------


def test_send_to_receiver_delivers_every_payload_in_order(
    receiver: Callable[..., Receiver],
) -> None:
    sink = Collect()
    r = receiver(sink=sink)
    frames = alphabet_frames(20_000, seed=2)
    summary = send.send(LOCAL, r.address[1], frames, batch_size=333)
    assert summary["messages"] == 20_000 and summary["bytes"] == 9 * 20_000
    assert set(summary) == {"messages", "bytes", "seconds", "rate"}
    assert r.wait_for(20_000, timeout=10)
    assert sink.payloads == [f[4:] for f in frames]
    assert alphabet_totals(sink.payloads) == alphabet_totals(frames)
    assert r.messages == 20_000 and r.byte_count == 9 * 20_000 and r.connections == 1
    assert r.first_at is not None and r.last_at is not None and r.first_at <= r.last_at
    summary = r.summary()
    assert summary["messages"] == 20_000 and summary["connections"] == 1


def test_stop_frees_the_port(receiver: Callable[..., Receiver]) -> None:
    r = receiver()
    port = r.address[1]
    socket.create_connection((LOCAL, port), timeout=5).close()
    r.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOCAL, port), timeout=5)
    assert not r.wait_for(1, timeout=5)  # returns at once: it has stopped


@pytest.mark.parametrize(("messages", "batch"), [(1000, 3), (123, 50), (7, 7), (0, 10)])
def test_repeat_wraps_around_the_file(
    receiver: Callable[..., Receiver], messages: int, batch: int
) -> None:
    sink = Collect()
    r = receiver(sink=sink)
    frames = [frame(f"m{i}".encode()) for i in range(7)]
    summary = send.send(
        LOCAL, r.address[1], frames, messages=messages, batch_size=batch, repeat=True
    )
    assert summary["messages"] == messages
    assert r.wait_for(messages, timeout=10)
    assert sink.payloads == [f"m{i % 7}".encode() for i in range(messages)]


def test_messages_without_repeat_sends_at_most_the_file(
    receiver: Callable[..., Receiver],
) -> None:
    sink = Collect()
    r = receiver(sink=sink)
    frames = [frame(b"a"), frame(b"b"), frame(b"c")]
    assert send.send(LOCAL, r.address[1], frames, messages=2)["messages"] == 2
    assert send.send(LOCAL, r.address[1], frames, messages=10)["messages"] == 3
    assert r.wait_for(5, timeout=10)
    assert sink.payloads == [b"a", b"b", b"a", b"b", b"c"]
    assert r.connections == 2


def test_many_concurrent_senders_and_reconnects(receiver: Callable[..., Receiver]) -> None:
    sink = Collect()
    r = receiver(sink=sink)
    port = r.address[1]
    per_sender = 5000
    streams = {i: [frame(f"{i}:{n}".encode()) for n in range(per_sender)] for i in range(6)}
    errors: list[Exception] = []

    def run(i: int) -> None:
        try:
            send.send(LOCAL, port, streams[i], batch_size=97)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    run(5)  # one more connection after the others closed: a reconnect
    assert not errors
    assert r.wait_for(6 * per_sender, timeout=10)
    assert r.connections == 6
    for i, frames in streams.items():  # each connection's order is kept
        mine = [p for p in sink.payloads if p.startswith(f"{i}:".encode())]
        assert mine == [f[4:] for f in frames]


def test_raw_mode_counts_lines_and_passes_bytes_through(
    receiver: Callable[..., Receiver],
) -> None:
    sink = Collect()
    r = receiver(framed=False, sink=sink)
    data = b"first line\nsecond\n\nfourth, split across writes\n"
    with socket.create_connection(r.address, timeout=5) as s:
        s.sendall(data[:15])
        assert r.wait_for(1, timeout=10)
        s.sendall(data[15:])
        assert r.wait_for(4, timeout=10)
    assert r.messages == 4
    assert bytes(sink.raw) == data


def test_oversized_frame_drops_only_that_connection(receiver: Callable[..., Receiver]) -> None:
    warnings: list[str] = []
    sink = Collect()
    r = receiver(sink=sink, max_frame=1000, log=warnings.append)
    with socket.create_connection(r.address, timeout=5) as bad:
        bad.sendall(frame(b"ok") + b"\x00\x01\x00\x00")
        bad.settimeout(10)
        assert bad.recv(10) == b""  # the receiver closed it
    assert any("65536" in w and "1000" in w for w in warnings), warnings
    send.send(LOCAL, r.address[1], [frame(b"still serving")])
    assert r.wait_for(2, timeout=10)
    assert sink.payloads == [b"ok", b"still serving"]


def test_interval_paces_batches(receiver: Callable[..., Receiver]) -> None:
    r = receiver()
    frames = alphabet_frames(50)
    summary = send.send(LOCAL, r.address[1], frames, batch_size=10, interval_ms=30)
    assert summary["messages"] == 50
    assert summary["seconds"] >= 0.1  # 5 batches, a 30 ms pause between each two
    assert r.wait_for(50, timeout=10)


def test_repeat_forever_until_stopped_with_progress(receiver: Callable[..., Receiver]) -> None:
    r = receiver()
    stop = threading.Event()
    reports: list[tuple[int, int, float]] = []
    result: dict = {}

    def run() -> None:
        result.update(
            send.send(
                LOCAL,
                r.address[1],
                alphabet_frames(100),
                repeat=True,
                stop=stop,
                progress=lambda *a: reports.append(a),
            )
        )

    t = threading.Thread(target=run)
    t.start()
    try:
        assert r.wait_for(50_000, timeout=20)
    finally:
        stop.set()
        t.join(20)
    assert result["messages"] >= 50_000 and result["bytes"] == 9 * result["messages"]
    assert reports and reports[-1][:2] == (result["messages"], result["bytes"])
    assert r.wait_for(result["messages"], timeout=10)
    assert r.messages == result["messages"]


def test_send_reports_peer_closing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.create_server((LOCAL, 0)) as server:

        def accept_and_close() -> None:
            conn, _ = server.accept()
            conn.close()

        t = threading.Thread(target=accept_and_close)
        t.start()
        port = server.getsockname()[1]
        file = write_frames(tmp_path / "a.bin", alphabet_frames(100))
        rc = send._standalone(
            ["--host", f"{LOCAL}:{port}", "--file", str(file), "--framed", "--repeat"]
        )
        t.join(10)
    err = capsys.readouterr().err
    assert rc == 1
    assert f"actorflow send: error: connection to 127.0.0.1:{port} lost" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--host", "127.0.0.1:1", "--file", "{missing}", "--framed"], "cannot read"),
        (["--host", "nocolon", "--file", "{good}", "--framed"], "--host"),
        (["--host", "127.0.0.1:70000", "--file", "{good}", "--framed"], "outside"),
        (["--host", "127.0.0.1:1", "--file", "{cut}", "--framed"], "not a whole number"),
        (
            ["--host", "127.0.0.1:1", "--file", "{good}", "--framed", "--batch-size", "0"],
            "--batch-size",
        ),
    ],
)
def test_send_errors_exit_1_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    good = write_frames(tmp_path / "good.bin", alphabet_frames(3))
    cut = tmp_path / "cut.bin"
    cut.write_bytes(good.read_bytes()[:-1])
    paths = {"missing": tmp_path / "missing.bin", "good": good, "cut": cut}
    argv = [a.format(**paths) for a in argv]
    assert send._standalone(argv) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("actorflow send: error: ") and message in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "h:1", "--file", "f"],
        ["--host", "h:1", "--file", "f", "--framed", "--newlines"],
        ["--file", "f", "--framed"],
        ["--host", "h:1", "--file", "f", "--framed", "--bogus"],
    ],
)
def test_send_flag_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        send._standalone(argv)
    assert info.value.code == 2
    assert "actorflow send: error:" in capsys.readouterr().err


@pytest.mark.parametrize("module", [send, receive, gen])
def test_help(module: object, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        module._standalone(["--help"])  # type: ignore[attr-defined]
    assert info.value.code == 0
    assert "usage: actorflow" in capsys.readouterr().out


# -- the tools as subprocesses ------------------------------------------------------------


def test_cli_send_to_cli_receive_framed_into_a_file(
    tool: Callable[..., Tool], tmp_path: Path
) -> None:
    frames = alphabet_frames(30_000, seed=9)
    data = write_frames(tmp_path / "alpha.bin", frames)
    out = tmp_path / "out.bin"
    rx = tool(
        "receive",
        "--listen",
        f"{LOCAL}:0",
        "--framed",
        "--output",
        str(out),
        "--expect",
        "30000",
        "--timeout",
        "30",
    )
    port = rx.wait_listening()
    tx = tool(
        "send", "--host", f"{LOCAL}:{port}", "--file", str(data), "--framed", "--batch-size", "1000"
    )
    assert tx.finish() == 0, tx.stderr
    assert rx.finish() == 0, rx.stderr
    sent = json.loads(tx.stdout)
    assert sent["messages"] == 30_000 and sent["bytes"] == 9 * 30_000
    assert sent["seconds"] > 0 and sent["rate"] > 0
    got = last_json(rx.stdout)
    assert got["messages"] == 30_000 and got["bytes"] == 9 * 30_000
    assert got["connections"] == 1
    assert out.read_bytes() == b"".join(f[4:] for f in frames)
    assert tx.stderr == ""  # progress only on a terminal
    assert rx.stderr.splitlines()[0] == f"listening on 127.0.0.1:{port}"


def test_cli_send_newlines_of_generated_words(
    tool: Callable[..., Tool], receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    words = tmp_path / "words.txt"
    assert (
        gen._standalone(["words", "--messages", "2000", "--seed", "4", "--output", str(words)]) == 0
    )
    sink = Collect()
    r = receiver(sink=sink)
    tx = tool(
        "send",
        "--host",
        f"{LOCAL}:{r.address[1]}",
        "--file",
        str(words),
        "--newlines",
        "--messages",
        "1500",
    )
    assert tx.finish() == 0, tx.stderr
    assert json.loads(tx.stdout)["messages"] == 1500
    assert r.wait_for(1500, timeout=10)
    lines = word_lines(2000, seed=4)[:1500]
    assert sink.payloads == [line.encode() for line in lines]
    assert word_counts(p.decode() for p in sink.payloads) == word_counts(lines)


def test_cli_receive_raw_to_stdout(tool: Callable[..., Tool]) -> None:
    rx = tool("receive", "--listen", f"{LOCAL}:0", "--expect", "3", "--timeout", "30")
    port = rx.wait_listening()
    data = b"alpha\nbeta\n" + bytes(range(11, 256)) + b"\x00\r\n"
    with socket.create_connection((LOCAL, port), timeout=5) as s:
        s.sendall(data)
    assert rx.finish() == 0, rx.stderr
    assert rx.stdout == data
    summary = last_json(rx.stderr)  # stdout carries the data, so the summary goes to stderr
    assert summary["messages"] == 3 and summary["bytes"] == len(data)


def test_cli_receive_timeout_says_how_many_arrived(
    tool: Callable[..., Tool], tmp_path: Path
) -> None:
    rx = tool(
        "receive",
        "--listen",
        f"{LOCAL}:0",
        "--framed",
        "--no-write",
        "--expect",
        "5",
        "--timeout",
        "1.5",
    )
    port = rx.wait_listening()
    send.send(LOCAL, port, alphabet_frames(2))
    assert rx.finish() == 1
    assert "actorflow receive: error: received 2 of 5 messages within 1.5 s" in rx.stderr
    assert last_json(rx.stdout)["messages"] == 2


def test_cli_receive_flushes_periodically_and_exits_0_on_sigterm(
    tool: Callable[..., Tool], tmp_path: Path
) -> None:
    out = tmp_path / "out.bin"
    rx = tool("receive", "--listen", f"{LOCAL}:0", "--framed", "--output", str(out))
    port = rx.wait_listening()
    frames = alphabet_frames(1000)
    send.send(LOCAL, port, frames)
    deadline = time.monotonic() + 15
    while not (out.exists() and out.stat().st_size == 5000):  # the 0.5 s flush, not exit
        assert time.monotonic() < deadline, "output was not flushed while running"
        assert rx.popen.poll() is None
        time.sleep(0.05)
    rx.popen.send_signal(signal.SIGTERM)
    assert rx.finish() == 0, rx.stderr
    assert out.read_bytes() == b"".join(f[4:] for f in frames)
    assert last_json(rx.stdout) | {"seconds": 0, "rate": 0} == {
        "messages": 1000,
        "bytes": 9000,
        "seconds": 0,
        "rate": 0,
        "connections": 1,
    }


def test_cli_send_waits_for_a_late_receiver(
    tool: Callable[..., Tool],
    receiver: Callable[..., Receiver],
    reserved_port: socket.socket,
    tmp_path: Path,
) -> None:
    port = reserved_port.getsockname()[1]
    frames = alphabet_frames(500)
    tx = tool(
        "send",
        "--host",
        f"{LOCAL}:{port}",
        "--file",
        str(write_frames(tmp_path / "a.bin", frames)),
        "--framed",
        "--connect-timeout",
        "30",
    )
    tx.wait_line("actorflow send: waiting for 127.0.0.1:")
    reserved_port.close()
    sink = Collect()
    r = receiver(sink=sink, port=port)
    assert tx.finish() == 0, tx.stderr
    assert r.wait_for(500, timeout=10)
    assert sink.payloads == [f[4:] for f in frames]
    assert tx.stderr.count("waiting for") == 1


def test_cli_send_gives_up_after_the_connect_timeout(
    tool: Callable[..., Tool], reserved_port: socket.socket, tmp_path: Path
) -> None:
    port = reserved_port.getsockname()[1]
    tx = tool(
        "send",
        "--host",
        f"{LOCAL}:{port}",
        "--file",
        str(write_frames(tmp_path / "a.bin", alphabet_frames(5))),
        "--framed",
        "--connect-timeout",
        "0.5",
    )
    assert tx.finish() == 1
    assert tx.stderr.count("waiting for") == 1
    assert f"actorflow send: error: could not connect to 127.0.0.1:{port} within 0.5 s" in tx.stderr
    assert tx.stdout == b""


def test_cli_send_repeat_runs_until_sigint(
    tool: Callable[..., Tool], receiver: Callable[..., Receiver], tmp_path: Path
) -> None:
    r = receiver()
    data = write_frames(tmp_path / "a.bin", alphabet_frames(10))
    tx = tool(
        "send",
        "--host",
        f"{LOCAL}:{r.address[1]}",
        "--file",
        str(data),
        "--framed",
        "--repeat",
        "--batch-size",
        "100",
        "--interval",
        "1",
    )
    assert r.wait_for(2000, timeout=20)
    tx.popen.send_signal(signal.SIGINT)
    assert tx.finish() == 0, tx.stderr
    summary = json.loads(tx.stdout)
    assert summary["messages"] >= 2000 and summary["bytes"] == 9 * summary["messages"]
    assert r.wait_for(summary["messages"], timeout=10)
    assert r.messages == summary["messages"]


def test_cli_send_flag_error_exits_2(tool: Callable[..., Tool]) -> None:
    tx = tool("send", "--host", "127.0.0.1:1", "--file", "x", "--framed", "--newlines")
    assert tx.finish() == 2
    assert "not allowed with argument" in tx.stderr


def test_cli_many_frames(tool: Callable[..., Tool], tmp_path: Path) -> None:
    n = 300_000
    data = write_frames(tmp_path / "alpha.bin", alphabet_frames(n))
    rx = tool(
        "receive",
        "--listen",
        f"{LOCAL}:0",
        "--framed",
        "--no-write",
        "--expect",
        str(n),
        "--timeout",
        "40",
    )
    port = rx.wait_listening()
    tx = tool("send", "--host", f"{LOCAL}:{port}", "--file", str(data), "--framed")
    assert tx.finish() == 0, tx.stderr
    assert rx.finish() == 0, rx.stderr
    got = last_json(rx.stdout)
    assert got["messages"] == n and got["bytes"] == 9 * n
    assert json.loads(tx.stdout)["messages"] == n
