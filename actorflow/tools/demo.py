"""Run the alphabet example end to end on this machine and check every letter's total.

`actorflow demo` is the quickest way to see a pipeline work: it picks free loopback
ports, starts a framed receiver in this process, starts one worker running the shipped
example by module name (actorflow.examples.alphabet, so it works from any directory
once installed), generates N vote messages, sends them, waits until all N outputs have
arrived, and compares each letter's final total from the cluster with the total
computed here from the generated frames. Everything it starts is stopped again, on
success, failure, exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from actorflow import examples
from actorflow.metrics.hub import Hub
from actorflow.processes import signals_masked, sigterm_interrupts
from actorflow.testing import WorkerProcess, free_port
from actorflow.tools.gen import alphabet_frames, alphabet_totals
from actorflow.tools.receive import Receiver
from actorflow.tools.send import send

HOST = "127.0.0.1"
SEED = 1
READY_TIMEOUT = 60.0
PROGRESS_EVERY = 0.2  # seconds between progress updates on a terminal


class DemoError(Exception):
    """The demo could not run (as opposed to: it ran and the totals did not match)."""


def alphabet_app() -> str:
    """The shipped alphabet example's module name (it works from any directory once
    actorflow is installed); DemoError if it is missing."""
    name = examples.module_name("alphabet")
    if importlib.util.find_spec(name) is None:
        raise DemoError(
            f"cannot find the alphabet example: module {name} is not installed "
            "(reinstall actorflow: the examples ship inside the package)"
        )
    return name


def final_totals(payloads: list[bytes]) -> tuple[dict[str, int], int]:
    """Each letter's last reported total from "<letter> => <total>\\n" lines, and the count of
    lines that are not of that form."""
    totals: dict[str, int] = {}
    bad = 0
    for payload in payloads:
        letter, sep, total = payload.decode("utf-8", "replace").rstrip("\n").partition(" => ")
        if not sep or not total.isdigit():
            bad += 1
            continue
        totals[letter] = int(total)
    return totals, bad


class _Progress:
    """One line updated in place on a terminal; a few plain lines otherwise."""

    def __init__(self, total: int, stream: Any = None) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self._quarter = 0
        self._last_draw = 0.0
        self._drawn = False

    def say(self, message: str) -> None:
        self.end_line()
        print(f"actorflow demo: {message}", file=self.stream, flush=True)

    def update(self, sent: int, received: int, seconds: float, *, force: bool = False) -> None:
        rate = received / seconds if seconds > 0 else 0.0
        text = (
            f"sent {sent:,}/{self.total:,}, received {received:,}/{self.total:,} "
            f"({rate:,.0f} msg/s)"
        )
        if self.tty:
            now = time.monotonic()
            if force or now - self._last_draw >= PROGRESS_EVERY:
                self.stream.write(f"\r{text}   ")
                self.stream.flush()
                self._last_draw = now
                self._drawn = True
            return
        # Not a terminal: one line each time another quarter of the outputs has arrived.
        quarter = min(4, received * 4 // self.total) if self.total else 4
        if quarter > self._quarter:
            self._quarter = quarter
            print(f"actorflow demo: {text}", file=self.stream, flush=True)

    def end_line(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _mark() -> str:
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "\u2713".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "ok"
    return "\u2713"


def report(
    sent: int,
    received: int,
    seconds: float,
    expected: dict[str, int],
    got: dict[str, int],
    malformed: int,
) -> bool:
    """Print the result table on stdout; return True if every check passed."""
    ok_mark = _mark()
    rate = received / seconds if seconds > 0 else 0.0
    print(f"{'messages sent':<20} {sent:>12,}")
    print(f"{'outputs received':<20} {received:>12,}")
    print(f"{'seconds':<20} {seconds:>12.2f}")
    print(f"{'throughput':<20} {rate:>12,.0f} msgs/s end to end")
    if malformed:
        print(f"{'malformed outputs':<20} {malformed:>12,}  MISMATCH")
    print()
    print(f"{'letter':<8}{'cluster':>14}{'expected':>14}  check")
    letters = list(string.ascii_lowercase)
    letters += sorted(set(got) - set(letters))  # anything unexpected shows up too
    mismatches = 0
    for letter in letters:
        want = expected.get(letter, 0)
        have = got.get(letter)
        good = (have if have is not None else 0) == want
        shown = "-" if have is None else f"{have:,}"
        mismatches += not good
        print(f"{letter:<8}{shown:>14}{want:>14,}  {ok_mark if good else 'MISMATCH'}")
    print()
    if mismatches == 0:
        print(f"all 26 totals match {ok_mark}")
    else:
        print(f"MISMATCH: {mismatches} of {len(letters)} totals do not match")
    complete = received == sent
    if not complete:
        print(f"MISMATCH: {received:,} outputs for {sent:,} messages")
    return mismatches == 0 and complete and malformed == 0


def demo(messages: int, keep_output: str | None = None, linger: float = 0.0) -> int:
    """Run the demo; return the exit code (0 only if every total matches).

    A metrics hub runs beside it; its page stays up ``linger`` seconds after the run."""
    progress = _Progress(messages)
    app = alphabet_app()
    if keep_output is not None:
        out_dir = Path(keep_output)
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_dir = False
    else:
        out_dir = Path(tempfile.mkdtemp(prefix="actorflow-demo-"))
        remove_dir = True
    log_path = out_dir / "worker.log"

    payloads: list[bytes] = []
    lock = threading.Lock()

    def collect(batch: list[bytes]) -> None:
        with lock:
            payloads.extend(batch)

    in_port, out_port, control_port = free_port(HOST), free_port(HOST), free_port(HOST)
    receiver = Receiver(HOST, out_port, framed=True, sink=collect, log=progress.say)
    hub = Hub((HOST, 0), (HOST, 0))
    worker: WorkerProcess | None = None
    stop_sending = threading.Event()
    sender: threading.Thread | None = None
    send_error: list[BaseException] = []
    succeeded = interrupted = False
    try:
        progress.say(
            f"ports: source {HOST}:{in_port}, sink {HOST}:{out_port}, control {HOST}:{control_port}"
        )
        receiver.start()
        hub.start()
        metrics_host, metrics_port = hub.report_address
        progress.say(
            f"metrics page: {hub.url} (the hub takes reports on {metrics_host}:{metrics_port})"
        )
        worker = WorkerProcess(
            app,
            [
                "--in",
                f"alphabet@{HOST}:{in_port}",
                "--out",
                f"{HOST}:{out_port}",
                "--control",
                f"{HOST}:{control_port}",
                "--topology-initializer",
                "--worker-count",
                "1",
                "--worker-name",
                "demo",
                "--resilience-dir",
                str(log_path.parent),
                "--metrics",
                f"{metrics_host}:{metrics_port}",
            ],
            log_path=str(log_path),
        )
        progress.say(f"starting worker 'demo' with {app}")
        worker.start()
        # Generate while the worker starts up.
        progress.say(f"generating {messages:,} alphabet messages (seed {SEED})")
        frames = alphabet_frames(messages, SEED)
        expected = alphabet_totals(frames)
        worker.wait_ready(READY_TIMEOUT)
        progress.say(f"worker ready (actor process group {worker.pgid}); sending")

        sent_so_far = [0]
        sent_summary: dict[str, Any] = {}

        def on_progress(n: int, _nbytes: int, _seconds: float) -> None:
            sent_so_far[0] = n

        def sending() -> None:
            try:
                sent_summary.update(
                    send(
                        HOST,
                        in_port,
                        frames,
                        batch_size=1000,
                        connect_timeout=30.0,
                        progress=on_progress,
                        log=None,
                        stop=stop_sending,
                    )
                )
            except BaseException as exc:  # reported by the main thread
                send_error.append(exc)

        # Generous: minutes even for a slow machine, but a stall ends the wait early.
        stall_timeout = 60.0
        start = time.monotonic()
        sender = threading.Thread(target=sending, name="actorflow-demo-sender", daemon=True)
        sender.start()
        last_count, last_change = 0, start
        while not receiver.wait_for(messages, 0.1):
            now = time.monotonic()
            count = receiver.messages
            progress.update(sent_so_far[0], count, now - start)
            if send_error:
                raise DemoError(f"sending failed: {send_error[0]}")
            if worker.proc is not None and worker.proc.poll() is not None:
                raise DemoError(f"the worker exited with code {worker.proc.returncode}")
            if count != last_count:
                last_count, last_change = count, now
            elif now - last_change > stall_timeout:
                raise DemoError(
                    f"no output for {stall_timeout:g} s; got {count:,} of {messages:,} outputs"
                )
        seconds = (receiver.last_at or time.monotonic()) - start
        sender.join(30)
        if send_error:
            raise DemoError(f"sending failed: {send_error[0]}")
        progress.update(messages, receiver.messages, seconds, force=True)
        progress.end_line()
        with lock:
            got_payloads = list(payloads)
        if keep_output is not None:
            (out_dir / "received.txt").write_bytes(b"".join(got_payloads))
        got, malformed = final_totals(got_payloads)
        print()
        sent = int(sent_summary.get("messages", 0))
        succeeded = report(sent, len(got_payloads), seconds, expected, got, malformed)
        if linger > 0:
            print(
                f"\nthe metrics page stays at {hub.url} for {linger:g} s (Ctrl-C ends it)",
                flush=True,
            )
            time.sleep(linger)
        return 0 if succeeded else 1
    except DemoError as exc:
        progress.end_line()
        print(f"actorflow demo: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        progress.end_line()
        print("actorflow demo: interrupted; stopping", file=sys.stderr, flush=True)
        interrupted = True
        return 130
    except (RuntimeError, OSError) as exc:  # wait_ready's message ends with the whole log
        progress.end_line()
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        if worker is not None and worker.proc is not None:
            try:
                code = worker.proc.wait(2)
            except subprocess.TimeoutExpired:
                code = None
            if code is not None and "exited" not in first:
                first = f"the worker exited with code {code} before it was ready"
        print(f"actorflow demo: error: {first}", file=sys.stderr, flush=True)
        return 1
    finally:
        with signals_masked():
            stop_sending.set()
            receiver.stop()
            hub.stop()
            if worker is not None:
                worker.stop()
            if sender is not None and sender.is_alive():  # a signal may come before start()
                sender.join(5)
        if (succeeded or interrupted) and remove_dir:
            shutil.rmtree(out_dir, ignore_errors=True)
        elif not succeeded and not interrupted and worker is not None:
            _show_log_tail(log_path)  # kept for whoever looks into the failure
        elif keep_output is not None:
            print(f"actorflow demo: output and worker log kept in {out_dir}", file=sys.stderr)


def _show_log_tail(path: Path, lines: int = 12) -> None:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        tail = []
    if tail:
        print("actorflow demo: the end of the worker's log:", file=sys.stderr)
        for line in tail:
            print(f"    {line}", file=sys.stderr)
    print(f"actorflow demo: the worker's log is {path}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actorflow demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--messages",
        type=int,
        default=200_000,
        metavar="N",
        help="alphabet vote messages to send (default: 200000)",
    )
    p.add_argument(
        "--linger",
        type=float,
        default=0.0,
        metavar="S",
        help="keep the metrics page up for S seconds after the run (default: 0)",
    )
    p.add_argument(
        "--keep-output",
        metavar="DIR",
        default=None,
        help="keep the received output (received.txt) and the worker's log (worker.log) in DIR",
    )
    return p


def run(argv: list[str]) -> int:
    """The `actorflow demo` command."""
    args = build_parser().parse_args(argv)
    if args.messages < 1:
        print("actorflow demo: error: --messages must be at least 1", file=sys.stderr)
        return 2
    try:
        with sigterm_interrupts():
            return demo(args.messages, args.keep_output, args.linger)
    except DemoError as exc:
        print(f"actorflow demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("actorflow demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
