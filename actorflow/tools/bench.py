"""Measure an app's end-to-end throughput on a cluster against a plain Python loop.

`actorflow bench alphabet` generates N alphabet vote frames and, in the same run, times
(a) the baseline: one Python process doing the app's work in a plain loop over the frame
stream (split frames, decode, keep running totals per letter, encode each output frame),
and (b) the cluster: a receiver subprocess, a one-worker cluster, and a sender subprocess
sending the frames from a file; with ``--workers N`` also (c) an N-worker cluster with the
frames split over the N workers' sources, one sender each. A cluster's time runs from just
before the senders start until the receiver has all N outputs. It prints the rates, their
ratios, and whether the bars are met (>= 150k msg/s end to end, >= 0.2 of the plain loop,
N workers >= 1.0x one). Everything it starts is stopped again, on success, failure,
exception, Ctrl-C or SIGTERM.

`actorflow bench word_count` does the same for word count (messages are lines; outputs,
one per word, are counted and rated too). ``--bytewax`` runs the same app in Bytewax in
one process on the same data; ``--latency`` and ``--memory`` add one worker's latency
(paced and saturated) and RSS with a slow receiver (:mod:`actorflow.tools.bench_latency`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import actorflow
from actorflow.processes import cpu_seconds, die_with_parent, signals_masked, sigterm_interrupts
from actorflow.testing import Cluster, free_port
from actorflow.tools import bytewax_baseline
from actorflow.tools.framing import frame
from actorflow.tools.gen import alphabet_frames, alphabet_totals, word_counts, word_lines

HOST = "127.0.0.1"
SEED = 1
READY_TIMEOUT = 60.0
BAR_RATE = 150_000.0  # msg/s end to end
BAR_RATIO = 0.2  # of the plain loop
BAR_SCALING = 1.0  # N workers against one, on the same machine
BAR_CHECKPOINT_COST = 0.10  # checkpoints every second: at most this much slower

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
            preexec_fn=die_with_parent,
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
    frames_paths: list[str],
    messages: int,
    *,
    log_dir: str,
    timeout: float | None = None,
    say: Any = None,
    extra: tuple[str, ...] = (),
    outputs: int | None = None,
    keep_output: str | None = None,
    source_name: str = "alphabet",
) -> dict[str, Any]:
    """One timed run: a receiver subprocess, a cluster of ``len(frames_paths)`` workers
    running `app`, and one sender subprocess per worker, each sending its file to that
    worker's source.

    The files hold `messages` frames in all; the run ends when the receiver has all
    `outputs` outputs (default: one per message). Returns {"messages", "received",
    "seconds" (senders' start to last output), "rate", "workers", "cpu_us_per_record"
    (CPU time of every process of the workers, per message)}. ``keep_output``: the
    receiver writes what it gets to that file. Raises BenchError if anything fails or
    outputs are missing.
    """
    say = say or (lambda _message: None)
    expected = messages if outputs is None else outputs
    if timeout is None:
        timeout = 120.0 + messages / 10_000  # generous: a stall ends it, not a slow machine
    workers = len(frames_paths)
    receiver: _Child | None = None
    senders: list[_Child] = []
    cluster: Cluster | None = None
    try:
        receiver = _Child(
            "receiver",
            [
                "-m",
                "actorflow.tools.receive",
                "--listen",
                f"{HOST}:0",
                "--framed",
                *(["--output", keep_output] if keep_output else ["--no-write"]),
                "--expect",
                str(expected),
                "--timeout",
                f"{READY_TIMEOUT + timeout:g}",
            ],
        )
        if not receiver.listening_event.wait(30) or receiver.listening is None:
            raise BenchError(f"the receiver did not start: {receiver.describe()}")
        out_port = int(receiver.listening.rsplit(":", 1)[1])
        cluster = Cluster(
            app, workers, [out_port], source_name=source_name, log_dir=log_dir, extra=extra
        )
        say(f"starting {workers} worker(s) (control {HOST}:{cluster.control})")
        try:
            cluster.start(READY_TIMEOUT)
        except RuntimeError as exc:
            raise BenchError(str(exc).splitlines()[0]) from None
        say(f"sending {messages:,} messages")
        groups = {w.pgid for w in cluster.workers if w.pgid}
        commands = {w.proc.pid for w in cluster.workers if w.proc is not None}
        cpu_before = cpu_seconds(groups, commands)
        start = time.monotonic()
        for port, path in zip(cluster.inputs, frames_paths, strict=True):
            senders.append(
                _Child(
                    "sender",
                    [
                        "-m",
                        "actorflow.tools.send",
                        "--host",
                        f"{HOST}:{port}",
                        "--file",
                        path,
                        "--framed",
                        "--batch-size",
                        "1000",
                    ],
                )
            )
        code = receiver.wait(timeout)
        if code is None:
            raise BenchError(f"the receiver did not finish within {timeout:g} s")
        got = receiver.summary()
        if code != 0 or got is None:
            raise BenchError(f"the receiver failed: {receiver.describe()}")
        done = got["_read_at"]
        cpu = cpu_seconds(groups, commands) - cpu_before
        for sender in senders:
            if sender.wait(30) != 0:
                raise BenchError(f"a sender failed: {sender.describe()}")
        received = int(got.get("messages", 0))
        if received != expected:
            raise BenchError(f"the receiver counted {received:,} outputs, not {expected:,}")
        seconds = done - start
        return {
            "workers": workers,
            "messages": messages,
            "received": received,
            "seconds": round(seconds, 4),
            "rate": round(messages / seconds, 1) if seconds > 0 else 0.0,
            "cpu_us_per_record": round(1e6 * cpu / messages, 3),
            "outputs": expected,
            "output_rate": round(expected / seconds, 1) if seconds > 0 else 0.0,
            "cpu_us_per_output": round(1e6 * cpu / expected, 3) if expected else 0.0,
            "receive_span": got.get("seconds"),
        }
    finally:
        with signals_masked():
            for child in (*senders, receiver):
                if child is not None:
                    child.kill()
            if cluster is not None:
                cluster.stop()


# -- the command -----------------------------------------------------------------------------


def alphabet_app() -> str:
    """The alphabet example shipped inside the package (actorflow/examples/alphabet.py),
    so the bench runs from any directory once installed; BenchError if it is missing."""
    app = Path(actorflow.__file__).resolve().parent / "examples" / "alphabet.py"
    if not app.is_file():
        raise BenchError(
            f"cannot find the alphabet example: {app} does not exist (reinstall actorflow: "
            "the examples ship inside the package)"
        )
    return str(app)


NO_CHECKPOINTS = 0  # key of the one-worker run without checkpoints
HUB_DOWN = -1  # key of the one-worker run reporting to a metrics hub that is down
NO_AUTH = -2  # key of the one-worker run with cluster authentication off
LANES = -3  # key of the one-worker run with --state-actors K
BAR_AUTH_COST = 0.05  # sealing every message between actors: at most this much slower


class AppSpec:
    """What the bench needs to know of an app: its file, source, data, baseline loop
    and Bytewax flow, and how to tell that outputs are right."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "alphabet":
            self.path = alphabet_app()
            self.source = "alphabet"
        else:
            self.path = example_app("word_count")
            self.source = "word count"

    def frames(self, messages: int) -> list[bytes]:
        if self.name == "alphabet":
            return alphabet_frames(messages, SEED)
        return [frame(line.encode()) for line in word_lines(messages, SEED)]

    def loop(self, data: bytes) -> tuple[list[bytes], dict[str, int], list[int] | None]:
        """The plain loop: outputs, final totals, and each output's input (None: one each)."""
        if self.name == "alphabet":
            out, totals = alphabet_loop(data)
            return out, totals, None
        return word_count_loop(data)

    def want(self, frames: list[bytes]) -> dict[str, int]:
        """Final totals computed independently of the loop (gen's own functions)."""
        if self.name == "alphabet":
            return alphabet_totals(frames)
        return word_counts(f[4:].decode() for f in frames)

    def bytewax(self, frames: list[bytes]) -> tuple[float, list[bytes]]:
        if self.name == "alphabet":
            return bytewax_baseline.alphabet(frames)
        return bytewax_baseline.word_count(frames)


def example_app(module: str) -> str:
    app = Path(actorflow.__file__).resolve().parent / "examples" / f"{module}.py"
    if not app.is_file():
        raise BenchError(f"cannot find the example app {app} (reinstall actorflow)")
    return str(app)


def last_totals(outputs: list[bytes]) -> dict[str, int]:
    """The last total per key of framed ``key => total`` output lines."""
    last: dict[str, int] = {}
    for out in outputs:
        key, _, total = out[4:].decode().partition(" => ")
        last[key] = int(total)
    return last


def word_count_loop(data: bytes) -> tuple[list[bytes], dict[str, int], list[int]]:
    """Word count as one plain loop: split frames, decode, split into words with the
    app's own function, count, encode each output. Also returns each output's line."""
    from actorflow.examples.word_count import split

    words_of = split.func
    unpack_header = struct.Struct(">I").unpack_from
    pack = struct.pack
    counts: dict[str, int] = {}
    out: list[bytes] = []
    inputs: list[int] = []
    append = out.append
    pos = 0
    end = len(data)
    line_no = 0
    while end - pos >= 4:
        size = unpack_header(data, pos)[0]
        start = pos + 4
        pos = start + size
        for word in words_of(data[start:pos].decode()):
            n = counts.get(word, 0) + 1
            counts[word] = n
            line = f"{word} => {n}\n".encode()
            append(pack(">I", len(line)) + line)
            inputs.append(line_no)
        line_no += 1
    return out, counts, inputs


def bench_bytewax(spec: AppSpec, frames: list[bytes], repeat: int, say: Any) -> float | str:
    """Best seconds of Bytewax over `frames` (checked like the loop), or why it was skipped."""
    why = bytewax_baseline.available()
    if why:
        say(f"Bytewax skipped: {why}")
        return why
    want = spec.want(frames)
    best = float("inf")
    for i in range(repeat):
        seconds, out = spec.bytewax(frames)
        if last_totals(out) != want:
            raise BenchError("the Bytewax run computed wrong totals")
        say(f"Bytewax {i + 1}/{repeat}: {seconds:.3f} s ({len(frames) / seconds:,.0f} msg/s)")
        best = min(best, seconds)
    return best


def bench_alphabet(
    messages: int,
    repeat: int,
    workers: int,
    say: Any,
    checkpoints: bool = False,
    hub_down: bool = False,
    auth: bool = False,
    bytewax: bool = False,
    keep_output: str | None = None,
    app: str = "alphabet",
    latency: bool = False,
    memory: int = 0,
    slow_rate: float = 0.0,
    paced_rate: float = 0.0,
    state_actors: int = 1,
) -> dict[str, Any]:
    """Measure the baseline and the cluster on 1 worker (and on `workers`, if more; and
    with checkpoints off, if `checkpoints`), best of `repeat` each, in this run; with
    `bytewax`, the same app in Bytewax in one process too. ``keep_output``: a folder
    where every run's receiver writes its outputs (``run{i}-{n}workers.out``).
    ``latency``: also source-to-receiver latency of one worker at half its best rate
    (``paced_rate``: at that rate instead) and at the maximal rate; ``memory``: also the
    RSS of one worker's processes while a receiver reading ``slow_rate`` outputs/s takes
    ``memory`` messages. ``state_actors`` above 1: also one worker with that many
    actors per state step."""
    spec = AppSpec(app)
    work = tempfile.mkdtemp(prefix="actorflow-bench-")
    failed = False
    sizes = sorted(
        {1, workers}
        | ({NO_CHECKPOINTS} if checkpoints else set())
        | ({HUB_DOWN} if hub_down else set())
        | ({NO_AUTH} if auth else set())
        | ({LANES} if state_actors > 1 else set())
    )
    extra_results: dict[str, Any] = {}
    try:
        say(f"generating {messages:,} {app} messages (seed {SEED})")
        frames = spec.frames(messages)
        files: dict[int, list[str]] = {}
        for n in sizes:  # each worker's source gets every n-th frame
            files[n] = []
            for i in range(max(n, 1)):
                path = os.path.join(work, f"{app}-{n}-{i}.frames")
                with open(path, "wb") as f:
                    f.write(b"".join(frames[i :: max(n, 1)]))
                files[n].append(path)
        data = b"".join(frames)
        baseline = []
        want = spec.want(frames)
        expected: list[bytes] = []
        out_input: list[int] | None = None
        for i in range(repeat):
            start = time.perf_counter()
            expected, totals, out_input = spec.loop(data)
            baseline.append(time.perf_counter() - start)
            if totals != want or last_totals(expected) != want:
                raise BenchError("the baseline loop computed wrong totals")
            say(
                f"baseline {i + 1}/{repeat}: {baseline[-1]:.3f} s "
                f"({messages / baseline[-1]:,.0f} msg/s)"
            )
        outputs = len(expected)
        bytewax_seconds = bench_bytewax(spec, frames, repeat, say) if bytewax else None
        if keep_output:
            os.makedirs(keep_output, exist_ok=True)
        del frames
        best: dict[int, dict[str, Any]] = {}
        for i in range(repeat):
            for n in sizes:
                label = {
                    NO_CHECKPOINTS: "1 worker, no checkpoints",
                    HUB_DOWN: "1 worker, metrics hub down",
                    NO_AUTH: "1 worker, cluster authentication off",
                    LANES: f"1 worker, {state_actors} state actors",
                }.get(n, f"{n} worker(s)")
                extra: tuple[str, ...] = ()
                if n == NO_CHECKPOINTS:
                    extra = ("--time-between-checkpoints", "0")
                elif n == HUB_DOWN:
                    extra = ("--metrics", f"{HOST}:{free_port(HOST)}")  # nobody listens
                elif n == NO_AUTH:
                    extra = ("--no-cluster-auth",)
                elif n == LANES:
                    extra = ("--state-actors", str(state_actors))
                run = cluster_run(
                    spec.path,
                    files[n],
                    messages,
                    log_dir=os.path.join(work, f"run{i + 1}-{n}workers"),
                    say=lambda m, i=i, label=label: say(f"{label}, run {i + 1}/{repeat}: {m}"),
                    extra=extra,
                    outputs=outputs,
                    source_name=spec.source,
                    keep_output=(
                        os.path.join(keep_output, f"run{i + 1}-{n}workers.out")
                        if keep_output
                        else None
                    ),
                )
                say(
                    f"{label}, run {i + 1}/{repeat}: {run['seconds']:.3f} s "
                    f"({run['rate']:,.0f} msg/s, {run['cpu_us_per_record']:.2f} us CPU "
                    "per record)"
                )
                if n not in best or run["seconds"] < best[n]["seconds"]:
                    best[n] = run
        if latency:
            from actorflow.tools.bench_latency import latency_runs

            extra_results["latency"] = latency_runs(
                spec,
                files[1][0],
                data,
                expected,
                out_input,
                2 * paced_rate if paced_rate else best[1]["rate"],
                work,
                say,
            )
        if memory:
            from actorflow.tools.bench_latency import memory_run

            extra_results["memory"] = memory_run(
                spec,
                data,
                memory,
                messages,
                outputs,
                out_input,
                sum(len(o) for o in expected),
                slow_rate,
                work,
                say,
            )
    except BenchError:
        failed = True
        raise
    finally:
        for paths in locals().get("files", {}).values():
            for path in paths:
                with contextlib.suppress(OSError):
                    os.remove(path)
        if failed:  # keep the worker logs
            say(f"the worker logs are kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    base_seconds = min(baseline)
    base_rate = messages / base_seconds if base_seconds > 0 else 0.0
    one = best[1]
    ratio = one["rate"] / base_rate if base_rate > 0 else 0.0
    result = {
        "app": app,
        "messages": messages,
        "outputs": outputs,
        "workers": workers,
        "repeat": repeat,
        "baseline_seconds": round(base_seconds, 4),
        "baseline_rate": round(base_rate, 1),
        "cluster_seconds": one["seconds"],
        "cluster_rate": one["rate"],
        "cluster_output_rate": one["output_rate"],
        "ratio": round(ratio, 4),
        "received": one["received"],
        "cpu_us_per_record": one["cpu_us_per_record"],
        "cpu_us_per_output": one["cpu_us_per_output"],
        "bars": {
            "rate_150k": (one["output_rate"] if app == "word_count" else one["rate"]) >= BAR_RATE,
            "ratio_0.2": ratio >= BAR_RATIO,
        },
        "runs": best,
        **extra_results,
    }
    if workers > 1:
        many = best[workers]
        scaling = many["rate"] / one["rate"] if one["rate"] > 0 else 0.0
        result.update(
            multi_rate=many["rate"],
            multi_seconds=many["seconds"],
            scaling=round(scaling, 4),
        )
        result["bars"]["scaling_1.0"] = scaling >= BAR_SCALING
    if NO_CHECKPOINTS in best:
        plain = best[NO_CHECKPOINTS]["rate"]
        slower = 1 - one["rate"] / plain if plain > 0 else 0.0
        result.update(no_checkpoint_rate=plain, checkpoint_cost=round(slower, 4))
        result["bars"]["checkpoints_10pct"] = slower <= BAR_CHECKPOINT_COST
    if HUB_DOWN in best:
        down = best[HUB_DOWN]["rate"]
        result.update(hub_down_rate=down, hub_down_ratio=round(down / one["rate"], 4))
    if isinstance(bytewax_seconds, float):
        rate = messages / bytewax_seconds
        result.update(bytewax_rate=round(rate, 1), ratio_to_bytewax=round(one["rate"] / rate, 4))
    elif bytewax:
        result["bytewax_skipped"] = bytewax_seconds
    if workers > 1:
        result["multi_cpu_us_per_record"] = best[workers]["cpu_us_per_record"]
    if LANES in best:
        lanes = best[LANES]
        result.update(
            state_actors=state_actors,
            lanes_rate=lanes["rate"],
            lanes_cpu_us_per_record=lanes["cpu_us_per_record"],
        )
    if NO_AUTH in best:
        plain = best[NO_AUTH]["rate"]
        cost = 1 - one["rate"] / plain if plain > 0 else 0.0
        result.update(no_auth_rate=plain, auth_cost=round(cost, 4))
        result["bars"]["auth_5pct"] = cost <= BAR_AUTH_COST
    return result


def print_table(result: dict[str, Any]) -> None:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    n = result["messages"]
    print(f"actorflow bench {result['app']}: {n:,} messages", end="")
    print(f", best of {result['repeat']}" if result["repeat"] > 1 else "")
    print(
        f"  baseline (plain loop)  {result['baseline_rate']:>12,.0f} msg/s"
        f"  ({result['baseline_seconds']:.3f} s)"
    )
    print(
        f"  cluster (end to end)   {result['cluster_rate']:>12,.0f} msg/s"
        f"  ({result['cluster_seconds']:.3f} s from sender start to last output)"
    )
    print(f"  ratio cluster/baseline {result['ratio']:>12.3f}")
    print(f"  CPU per record, 1 worker {result['cpu_us_per_record']:>10.2f} us (all its processes)")
    if "bytewax_rate" in result:
        print(
            f"  Bytewax (one process)  {result['bytewax_rate']:>12,.0f} msg/s"
            f"  (actorflow, 1 worker: {result['ratio_to_bytewax']:.3f} of it)"
        )
    elif "bytewax_skipped" in result:
        print(f"  Bytewax: skipped: {result['bytewax_skipped']}")
    if "no_checkpoint_rate" in result:
        print(
            f"  1 worker, no checkpoints {result['no_checkpoint_rate']:>10,.0f} msg/s"
            f"  (checkpoints every 1 s cost {100 * result['checkpoint_cost']:.1f}%)"
        )
    if result["workers"] > 1:
        w = result["workers"]
        print(
            f"  cluster, {w} workers      {result['multi_rate']:>12,.0f} msg/s"
            f"  ({result['multi_seconds']:.3f} s; data split over the {w} sources)"
        )
        print(f"  {w} workers / 1 worker   {result['scaling']:>12.3f}")
        print(
            f"  CPU per record, {w} workers {result['multi_cpu_us_per_record']:>8.2f} us"
            f"  ({result['multi_cpu_us_per_record'] / result['cpu_us_per_record']:.2f} of one)"
        )
    if "lanes_rate" in result:
        k = result["state_actors"]
        print(
            f"  1 worker, {k} state actors {result['lanes_rate']:>8,.0f} msg/s, "
            f"{result['lanes_cpu_us_per_record']:.2f} us CPU per record "
            f"({result['lanes_cpu_us_per_record'] / result['cpu_us_per_record']:.2f} of one)"
        )
    if result.get("outputs", n) != n:
        print(
            f"  outputs, 1 worker      {result['cluster_output_rate']:>12,.0f} /s"
            f"  ({result['outputs']:,} outputs; {result['cpu_us_per_output']:.2f} us CPU each)"
        )
    print(f"  outputs received       {result['received']:>12,} of {result.get('outputs', n):,}")
    for lat in result.get("latency", {}).values():
        at = f"paced at {lat['rate']:,.0f} msg/s" if lat.get("rate") else "at the maximal rate"
        print(
            f"  latency, 1 worker, {at}: p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
            f"p99.9 {lat['p99_9']:.1f} ms, max {lat['max']:.1f} ms"
        )
    if "memory" in result:
        mem = result["memory"]
        print(
            f"  memory, 1 worker, slow receiver ({mem['output_rate']:,.0f} outputs/s, "
            f"{mem['messages']:,} messages): peak RSS {mem['peak_rss_mb']:.0f} MB over its "
            f"{mem['processes']} processes"
        )
    bars = result["bars"]
    unit = "outputs/s" if result["app"] == "word_count" else "msg/s"
    print(f"  bar >= 150k {unit} end to end: {met(bars['rate_150k'])}")
    print(f"  bar >= 0.2 of the plain loop:   {met(bars['ratio_0.2'])}")
    if "checkpoints_10pct" in bars:
        print(f"  bar checkpoints cost <= 10%:    {met(bars['checkpoints_10pct'])}")
    if "hub_down_rate" in result:
        print(
            f"  1 worker, metrics hub down {result['hub_down_rate']:>8,.0f} msg/s"
            f"  ({result['hub_down_ratio']:.3f} of 1 worker without --metrics)"
        )
    if "no_auth_rate" in result:
        print(
            f"  1 worker, authentication off {result['no_auth_rate']:>6,.0f} msg/s"
            f"  (authenticated cluster traffic costs {100 * result['auth_cost']:.1f}%)"
        )
        print(f"  bar authentication cost <= 5%:  {met(bars['auth_5pct'])}")
    if "scaling_1.0" in bars:
        print(f"  bar {result['workers']} workers >= 1.0x one:  {met(bars['scaling_1.0'])}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="actorflow bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "app",
        choices=["alphabet", "word_count", "windows"],
        help="the app to measure (word_count: messages are lines of 3-12 words; windows: "
        "1 s tumbling windows over 10k keys against the same pipeline without windows)",
    )
    p.add_argument(
        "--messages",
        type=int,
        default=None,
        metavar="N",
        help="messages to process (default: 1000000; word_count: 200000 lines)",
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
        help="also measure a cluster of N workers, next to one worker (default: 1)",
    )
    p.add_argument(
        "--checkpoints",
        action="store_true",
        help="also measure one worker with checkpoints off, to show what they cost",
    )
    p.add_argument(
        "--hub-down",
        action="store_true",
        help="also measure one worker reporting to a metrics hub that is down",
    )
    p.add_argument(
        "--state-actors",
        type=int,
        default=1,
        metavar="K",
        help="also measure one worker with K actors per state step (--state-actors)",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="also measure one worker with cluster authentication off, to show what it costs",
    )
    p.add_argument(
        "--bytewax",
        action="store_true",
        help="also run the same app in Bytewax, in one process (pip install 'actorflow[bench]')",
    )
    p.add_argument(
        "--keep-output",
        metavar="DIR",
        help="every run's receiver writes its outputs to a file in DIR (to check them)",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="also measure p50/p99/p99.9 latency of one worker, paced at half of its "
        "measured rate and at the maximal rate",
    )
    p.add_argument(
        "--paced-rate",
        type=float,
        default=0.0,
        metavar="R",
        help="pace the --latency run at R msg/s instead of half the measured rate",
    )
    p.add_argument(
        "--memory",
        type=int,
        nargs="?",
        const=5_000_000,
        default=0,
        metavar="N",
        help="also measure the RSS of one worker's processes while a slow receiver takes "
        "N messages' outputs (default N: 5000000)",
    )
    p.add_argument(
        "--slow-rate",
        type=float,
        default=100_000.0,
        metavar="R",
        help="outputs per second the slow receiver of --memory reads (default: 100000)",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON line")
    return p


def run(argv: list[str]) -> int:
    """The `actorflow bench` command."""
    args = build_parser().parse_args(argv)
    if args.messages is None:
        args.messages = 200_000 if args.app == "word_count" else 1_000_000
    if args.workers < 1:
        print("actorflow bench: error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.messages < 1:
        print("actorflow bench: error: --messages must be at least 1", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("actorflow bench: error: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.state_actors < 1:
        print("actorflow bench: error: --state-actors must be at least 1", file=sys.stderr)
        return 2

    def say(message: str) -> None:
        print(f"actorflow bench: {message}", file=sys.stderr, flush=True)

    if args.app == "windows":
        from actorflow.tools.bench_windows import bench_windows, print_windows_table

        return _report(
            args, lambda: bench_windows(args.messages, args.repeat, say), print_windows_table
        )
    return _report(
        args,
        lambda: bench_alphabet(
            args.messages,
            args.repeat,
            args.workers,
            say,
            args.checkpoints,
            args.hub_down,
            args.auth,
            args.bytewax,
            args.keep_output,
            args.app,
            args.latency,
            args.memory,
            args.slow_rate,
            args.paced_rate,
            args.state_actors,
        ),
        print_table,
    )


def _report(args: argparse.Namespace, measure: Any, printer: Any) -> int:
    """Run ``measure`` (interruptible by SIGTERM), then print its result."""
    try:
        with sigterm_interrupts():
            result = measure()
    except BenchError as exc:
        print(f"actorflow bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("actorflow bench: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(result), flush=True)
    else:
        printer(result)
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
