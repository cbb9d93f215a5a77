"""Measure an app's end-to-end throughput on a one-worker cluster against a plain Python loop.

`actorflow bench alphabet` generates N alphabet vote frames and, in the same run, times
(a) the baseline: one Python process doing the app's work in a plain loop over the frame
stream (split frames, decode, keep running totals per letter, encode each output frame),
and (b) the cluster: a receiver subprocess, one worker, and a sender subprocess sending
the frames from a file; the cluster's time runs from just before the sender starts until
the receiver has all N outputs. It prints both rates, their ratio, and whether the bars
(>= 150k msg/s end to end, >= 0.2 of the plain loop) are met. Everything it starts is
stopped again, on success, failure, exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import actorflow
from actorflow.testing import WorkerProcess, free_port
from actorflow.tools.gen import alphabet_frames, alphabet_totals

HOST = "127.0.0.1"
SEED = 1
READY_TIMEOUT = 60.0
BAR_RATE = 150_000.0  # msg/s end to end
BAR_RATIO = 0.2  # of the plain loop

_LISTENING = re.compile(r"listening on (?P<address>\S+)")


class BenchError(Exception):
    """A run could not be measured (a process failed, or outputs went missing)."""


# -- the baseline ----------------------------------------------------------------------------


def alphabet_loop(data: bytes) -> tuple[list[bytes], dict[str, int]]:
    """The alphabet app's work as one plain loop over a framed byte stream.

    Splits the 4-byte big-endian length-prefixed frames, decodes each payload with
    ``struct.unpack(">sI")``, adds the votes to the letter's running total, and encodes
    the framed output line exactly like apps/alphabet.py's encoder. Returns the outputs
    and the final totals.
    """
    unpack_header = struct.Struct(">I").unpack_from
    unpack = struct.unpack
    pack = struct.pack
    totals: dict[str, int] = {}
    out: list[bytes] = []
    append = out.append
    pos = 0
    end = len(data)
    while end - pos >= 4:
        size = unpack_header(data, pos)[0]
        start = pos + 4
        pos = start + size
        letter_b, votes = unpack(">sI", data[start:pos])
        letter = letter_b.decode()
        total = totals.get(letter, 0) + votes
        totals[letter] = total
        line = f"{letter} => {total}\n".encode()
        append(pack(">I", len(line)) + line)
    return out, totals


def baseline_alphabet(frames: list[bytes]) -> float:
    """Seconds the plain loop takes over `frames` (joined into one stream beforehand).

    Raises BenchError if the loop's results are wrong (a broken baseline measures nothing).
    """
    data = b"".join(frames)
    start = time.perf_counter()
    out, totals = alphabet_loop(data)
    seconds = time.perf_counter() - start
    if len(out) != len(frames) or totals != alphabet_totals(frames):
        raise BenchError("the baseline loop computed wrong totals")
    return seconds


# -- the cluster -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Child:
    """A tool subprocess whose stdout and stderr lines are collected by threads."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self.stdout: list[tuple[float, str]] = []  # (monotonic time read, line)
        self.stderr: list[str] = []
        self.listening: str | None = None
        self.listening_event = threading.Event()
        self.exited_at: float | None = None
        self._threads = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
            threading.Thread(target=self._note_exit, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append((time.monotonic(), line))

    def _note_exit(self) -> None:
        self.proc.wait()
        self.exited_at = time.monotonic()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            m = _LISTENING.search(line)
            if m and self.listening is None:
                self.listening = m.group("address")
                self.listening_event.set()
        self.listening_event.set()

    def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit and its output to be read; None on timeout."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._threads:
            t.join(5)
        return code

    def summary(self) -> dict[str, Any] | None:
        """The tool's JSON summary line, with the time it was read; None if there is none."""
        for at, line in reversed(self.stdout):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return {**data, "_read_at": at}
        return None

    def describe(self) -> str:
        tail = "".join(self.stderr[-10:]).rstrip()
        return f"{self.name} (exit code {self.proc.poll()})" + (f":\n{tail}" if tail else "")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def cluster_run(
    app: str,
    frames_path: str,
    messages: int,
    *,
    log_path: str,
    timeout: float | None = None,
    say: Any = None,
) -> dict[str, Any]:
    """One timed run: receiver and sender subprocesses around one worker running `app`.

    The frames in `frames_path` (framed, `messages` of them) are sent once; the run ends
    when the receiver has all `messages` outputs. Returns {"messages", "received",
    "seconds" (sender start to last output), "rate", "send_seconds", "receive_span",
    "worker_log"}. Raises BenchError if anything fails or outputs are missing.
    """
    say = say or (lambda _message: None)
    if timeout is None:
        timeout = 120.0 + messages / 10_000  # generous: a stall ends it, not a slow machine
    receiver: _Child | None = None
    sender: _Child | None = None
    worker: WorkerProcess | None = None
    try:
        receiver = _Child(
            "receiver",
            [
                "-m",
                "actorflow.tools.receive",
                "--listen",
                f"{HOST}:0",
                "--framed",
                "--no-write",
                "--expect",
                str(messages),
                "--timeout",
                f"{READY_TIMEOUT + timeout:g}",
            ],
        )
        if not receiver.listening_event.wait(30) or receiver.listening is None:
            raise BenchError(f"the receiver did not start: {receiver.describe()}")
        out_address = receiver.listening
        in_port, control_port = free_port(HOST), free_port(HOST)
        say(f"starting a worker (control {HOST}:{control_port}, sink {out_address})")
        worker = WorkerProcess(
            app,
            [
                "--in",
                f"alphabet@{HOST}:{in_port}",
                "--out",
                out_address,
                "--control",
                f"{HOST}:{control_port}",
                "--topology-initializer",
                "--worker-count",
                "1",
                "--worker-name",
                "bench",
            ],
            log_path=log_path,
        ).start()
        try:
            worker.wait_ready(READY_TIMEOUT)
        except RuntimeError as exc:
            raise BenchError(str(exc).splitlines()[0]) from None
        say(f"sending {messages:,} messages")
        start = time.monotonic()
        sender = _Child(
            "sender",
            [
                "-m",
                "actorflow.tools.send",
                "--host",
                f"{HOST}:{in_port}",
                "--file",
                frames_path,
                "--framed",
                "--batch-size",
                "1000",
            ],
        )
        code = receiver.wait(timeout)
        if code is None:
            raise BenchError(f"the receiver did not finish within {timeout:g} s")
        got = receiver.summary()
        if code != 0 or got is None:
            raise BenchError(f"the receiver failed: {receiver.describe()}")
        done = got["_read_at"]
        if sender.wait(30) != 0:
            raise BenchError(f"the sender failed: {sender.describe()}")
        sent = sender.summary() or {}
        received = int(got.get("messages", 0))
        if received != messages:
            raise BenchError(f"the receiver counted {received:,} outputs, not {messages:,}")
        seconds = done - start
        # The sender's own clock starts once it has loaded the file and connected; its
        # exit follows its last write closely, so this estimates when sending began.
        sending_from = None
        if sent.get("seconds") is not None and sender.exited_at is not None:
            sending_from = max(start, sender.exited_at - float(sent["seconds"]))
        return {
            "messages": messages,
            "received": received,
            "seconds": round(seconds, 4),
            "rate": round(messages / seconds, 1) if seconds > 0 else 0.0,
            "sender_startup": None if sending_from is None else round(sending_from - start, 4),
            "send_seconds": sent.get("seconds"),
            "receive_span": got.get("seconds"),
            "worker_log": log_path,
        }
    finally:
        masked = _mask_signals()  # a second Ctrl-C must not cut the clean-up short
        try:
            for child in (sender, receiver):
                if child is not None:
                    child.kill()
            if worker is not None:
                worker.stop()
        finally:
            _restore_signals(masked)


def _mask_signals() -> dict[int, Any]:
    """Ignore SIGINT and SIGTERM (main thread only); return the handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


# -- the command -----------------------------------------------------------------------------


def alphabet_app() -> str:
    """apps/alphabet.py next to the `actorflow` package; BenchError if it is missing."""
    app = Path(actorflow.__file__).resolve().parent.parent / "apps" / "alphabet.py"
    if not app.is_file():
        raise BenchError(
            f"cannot find the alphabet example: {app} does not exist (the bench runs from a "
            "source checkout, where apps/ sits next to the actorflow package)"
        )
    return str(app)


def bench_alphabet(messages: int, repeat: int, say: Any) -> dict[str, Any]:
    """Measure the baseline and the cluster (best of `repeat` each); return the result."""
    app = alphabet_app()
    work = tempfile.mkdtemp(prefix="actorflow-bench-")
    frames_path = os.path.join(work, "alphabet.frames")
    failed = False
    try:
        say(f"generating {messages:,} alphabet messages (seed {SEED}) into {frames_path}")
        frames = alphabet_frames(messages, SEED)
        with open(frames_path, "wb") as f:
            f.write(b"".join(frames))
        baseline = []
        for i in range(repeat):
            baseline.append(baseline_alphabet(frames))
            say(
                f"baseline {i + 1}/{repeat}: {baseline[-1]:.3f} s "
                f"({messages / baseline[-1]:,.0f} msg/s)"
            )
        del frames
        runs = []
        for i in range(repeat):
            run = cluster_run(
                app,
                frames_path,
                messages,
                log_path=os.path.join(work, f"worker-{i + 1}.log"),
                say=lambda m, i=i: say(f"cluster {i + 1}/{repeat}: {m}"),
            )
            runs.append(run)
            say(f"cluster {i + 1}/{repeat}: {run['seconds']:.3f} s ({run['rate']:,.0f} msg/s)")
    except BenchError:
        failed = True
        raise
    finally:
        if failed:  # keep the worker logs, not the (large) data
            with contextlib.suppress(OSError):
                os.remove(frames_path)
            say(f"the worker logs are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    base_seconds = min(baseline)
    best = min(runs, key=lambda r: r["seconds"])
    base_rate = messages / base_seconds if base_seconds > 0 else 0.0
    cluster_rate = best["rate"]
    ratio = cluster_rate / base_rate if base_rate > 0 else 0.0
    return {
        "app": "alphabet",
        "messages": messages,
        "workers": 1,
        "repeat": repeat,
        "baseline_seconds": round(base_seconds, 4),
        "baseline_rate": round(base_rate, 1),
        "cluster_seconds": best["seconds"],
        "cluster_rate": cluster_rate,
        "ratio": round(ratio, 4),
        "received": best["received"],
        "sender_startup": best["sender_startup"],
        "send_seconds": best["send_seconds"],
        "receive_span": best["receive_span"],
        "bars": {
            "rate_150k": cluster_rate >= BAR_RATE,
            "ratio_0.2": ratio >= BAR_RATIO,
        },
        "runs": [{k: v for k, v in r.items() if k != "worker_log"} for r in runs],
    }


def print_table(result: dict[str, Any]) -> None:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    n = result["messages"]
    print(f"actorflow bench {result['app']}: {n:,} messages, {result['workers']} worker", end="")
    print(f", best of {result['repeat']}" if result["repeat"] > 1 else "")
    print(
        f"  baseline (plain loop)  {result['baseline_rate']:>12,.0f} msg/s"
        f"  ({result['baseline_seconds']:.3f} s)"
    )
    print(
        f"  cluster (end to end)   {result['cluster_rate']:>12,.0f} msg/s"
        f"  ({result['cluster_seconds']:.3f} s from sender start to last output)"
    )
    startup = result.get("sender_startup")
    if startup is not None:
        after = result["cluster_seconds"] - startup
        print(
            f"    of which sender start-up (interpreter, loading the file) ~{startup:.3f} s; "
            f"from its first write: {n / after if after > 0 else 0:,.0f} msg/s"
        )
    if result.get("send_seconds") is not None and result.get("receive_span") is not None:
        print(
            f"    sender writing {result['send_seconds']:.3f} s, "
            f"receiver first to last output {result['receive_span']:.3f} s"
        )
    print(f"  ratio cluster/baseline {result['ratio']:>12.3f}")
    print(f"  outputs received       {result['received']:>12,} of {n:,}")
    bars = result["bars"]
    print(f"  bar >= 150k msg/s end to end:   {met(bars['rate_150k'])}")
    print(f"  bar >= 0.2 of the plain loop:   {met(bars['ratio_0.2'])}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actorflow bench", description=__doc__.splitlines()[0])
    p.add_argument("app", choices=["alphabet"], help="the app to measure")
    p.add_argument(
        "--messages",
        type=int,
        default=1_000_000,
        metavar="N",
        help="messages to process (default: 1000000)",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="runs of each measurement; the best one counts (default: 1)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="workers in the cluster (default: 1; only 1 is supported so far)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(argv: list[str]) -> int:
    """The `actorflow bench` command."""
    args = build_parser().parse_args(argv)
    if args.workers != 1:
        print(
            f"actorflow bench: error: --workers {args.workers} is not supported yet "
            "(only one-worker clusters can be measured so far)",
            file=sys.stderr,
        )
        return 2
    if args.messages < 1:
        print("actorflow bench: error: --messages must be at least 1", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("actorflow bench: error: --repeat must be at least 1", file=sys.stderr)
        return 2

    def say(message: str) -> None:
        print(f"actorflow bench: {message}", file=sys.stderr, flush=True)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main_thread else None
    try:
        result = bench_alphabet(args.messages, args.repeat, say)
    except BenchError as exc:
        print(f"actorflow bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("actorflow bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
