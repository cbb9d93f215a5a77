"""``actorflow bench --latency`` and ``--memory``: latency and memory of one worker.

Latency: a probe sender (``actorflow.tools.probe send``) sends the one-worker input to
the worker's source, paced at half the rate the same bench measured (and then as fast
as the source takes it); a probe receiver notes when each output's last byte arrives.
One worker keeps outputs in input order, so output j pairs with its input: its latency
is from the moment the input was handed to the source's socket to the moment its output
was read, percentiles over (a sample of) every output. The receiver's bytes are checked
against the plain loop's outputs (SHA-256), so the pairing is known to be right.

Memory: a receiver that reads no faster than ``slow_rate`` outputs per second takes
every output of ``memory`` messages (the input repeated), sent as fast as the source
takes them; the RSS of every process of the worker (its command, admin, logger and
actors) is summed every 0.2 s, and the peak is reported.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from typing import Any

import psutil

from actorflow.processes import signals_masked
from actorflow.testing import Cluster
from actorflow.tools.bench import HOST, READY_TIMEOUT, BenchError, _Child
from actorflow.tools.probe import frame_ends, latencies, percentiles

SAMPLE_EVERY = 0.2  # seconds between RSS samples


def _tree_rss(pids: list[int]) -> tuple[int, int]:
    """(bytes of RSS, processes) summed over ``pids`` and all their descendants."""
    seen: set[int] = set()
    total = 0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for p in procs:
            if p.pid in seen:
                continue
            seen.add(p.pid)
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    return total, len(seen)


def _probe_run(
    spec: Any,
    path: str,
    log_dir: str,
    receive_args: list[str],
    send_args: list[str],
    timeout: float,
    say: Any,
    sample_rss: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Probe receiver, one worker, probe sender; their summaries (and RSS samples)."""
    receiver: _Child | None = None
    sender: _Child | None = None
    cluster: Cluster | None = None
    try:
        receiver = _Child(
            "probe receiver",
            ["-m", "actorflow.tools.probe", "receive", "--timeout", f"{timeout:g}", *receive_args],
        )
        if not receiver.listening_event.wait(30) or receiver.listening is None:
            raise BenchError(f"the probe receiver did not start: {receiver.describe()}")
        port = int(receiver.listening.rsplit(":", 1)[1])
        cluster = Cluster(
            spec.path, 1, [port], source_name=spec.source, log_dir=log_dir, extra=extra
        )
        try:
            cluster.start(READY_TIMEOUT)
        except RuntimeError as exc:
            raise BenchError(str(exc).splitlines()[0]) from None
        pids = [w.proc.pid for w in cluster.workers if w.proc is not None]
        sender = _Child(
            "probe sender",
            [
                "-m",
                "actorflow.tools.probe",
                "send",
                "--host",
                f"{HOST}:{cluster.inputs[0]}",
                "--file",
                path,
                *send_args,
            ],
        )
        peak = 0
        procs = 0
        samples = []
        deadline = time.monotonic() + timeout
        while receiver.proc.poll() is None:
            if time.monotonic() > deadline:
                raise BenchError(f"the probe receiver did not finish within {timeout:g} s")
            if sample_rss:
                rss, n = _tree_rss(pids)
                samples.append(rss)
                if rss > peak:
                    peak, procs = rss, n
            time.sleep(SAMPLE_EVERY if sample_rss else 0.05)
        if receiver.wait(30) != 0 or receiver.summary() is None:
            raise BenchError(f"the probe receiver failed: {receiver.describe()}")
        if sender.wait(60) != 0 or sender.summary() is None:
            raise BenchError(f"the probe sender failed: {sender.describe()}")
        return {
            "received": receiver.summary(),
            "sent": sender.summary(),
            "peak_rss": peak,
            "processes": procs,
            "rss_samples": samples,
        }
    finally:
        with signals_masked():
            for child in (sender, receiver):
                if child is not None:
                    child.kill()
            if cluster is not None:
                cluster.stop()


def latency_runs(
    spec: Any,
    path: str,
    data: bytes,
    expected: list[bytes],
    out_input: list[int] | None,
    max_rate: float,
    work: str,
    say: Any,
    extra: tuple[str, ...] = (),
    modes: tuple[str, ...] = ("paced", "saturated"),
) -> dict[str, Any]:
    """p50/p99/p99.9 (ms) of one worker at half of ``max_rate`` and at the maximal rate;
    ``extra``: more arguments for the worker."""
    want = b"".join(expected)
    digest = hashlib.sha256(want).hexdigest()
    ends = []
    pos = 0
    for out in expected:
        pos += len(out)
        ends.append(pos)
    messages = len(frame_ends(data))
    result: dict[str, Any] = {}
    for mode, rate in (("paced", max_rate / 2), ("saturated", 0.0)):
        if mode not in modes:
            continue
        label = f"latency, {mode}" + (f" at {rate:,.0f} msg/s" if rate else "")
        say(f"{label}: {messages:,} messages")
        ev_r = os.path.join(work, f"latency-{mode}.received.json")
        ev_s = os.path.join(work, f"latency-{mode}.sent.json")
        timeout = 120.0 + messages / max(rate, 10_000.0)
        run = _probe_run(
            spec,
            path,
            os.path.join(work, f"latency-{mode}"),
            ["--expect-bytes", str(len(want)), "--events", ev_r],
            ["--rate", f"{rate:.1f}", "--events", ev_s],
            timeout,
            say,
            extra=extra,
        )
        got = run["received"]
        if got.get("bytes") != len(want) or got.get("sha256") != digest:
            raise BenchError(f"{label}: the outputs differ from the plain loop's")
        with open(ev_s) as f:
            sent = json.load(f)
        with open(ev_r) as f:
            received = json.load(f)
        lat = latencies(sent, received, ends, out_input)
        figures = percentiles(lat)
        seconds = got["seconds"]
        figures.update(
            rate=round(rate, 1) if rate else None,
            achieved_rate=round(messages / run["sent"]["seconds"], 1)
            if run["sent"]["seconds"] > 0
            else 0.0,
            samples=len(lat),
            receive_seconds=seconds,
        )
        say(
            f"{label}: p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, "
            f"p99.9 {figures['p99_9']:.1f} ms (sent at {figures['achieved_rate']:,.0f} msg/s)"
        )
        result[mode] = figures
    return result


def memory_run(
    spec: Any,
    data: bytes,
    memory: int,
    messages: int,
    outputs: int,
    out_input: list[int] | None,
    out_bytes: int,
    slow_rate: float,
    work: str,
    say: Any,
) -> dict[str, Any]:
    """Peak RSS of one worker's processes while a slow receiver takes ``memory``
    messages' outputs (``data`` repeated, then its first frames)."""
    reps, rest = divmod(memory, messages)
    ends = frame_ends(data)
    path = os.path.join(work, "memory.frames")
    with open(path, "wb") as f:
        for _ in range(reps):
            f.write(data)
        if rest:
            f.write(data[: ends[rest - 1]])
    partial = rest if out_input is None else bisect.bisect_left(out_input, rest)
    want = reps * outputs + partial
    per_output = out_bytes / max(outputs, 1)  # bytes per output, for pacing
    say(
        f"memory: {memory:,} messages ({want:,} outputs) to a receiver reading at most "
        f"{slow_rate:,.0f} outputs/s"
    )
    timeout = 120.0 + 2 * want / max(slow_rate, 1.0)
    try:
        run = _probe_run(
            spec,
            path,
            os.path.join(work, "memory"),
            [
                "--expect-frames",
                str(want),
                "--rate",
                f"{slow_rate * max(per_output, 8.0):.1f}",
                "--events",
                "-",
            ],
            ["--events", "-"],
            timeout,
            say,
            sample_rss=True,
        )
    finally:
        os.remove(path)
    got = run["received"]
    if got.get("frames") != want:
        raise BenchError(f"memory: the receiver got {got.get('frames')} outputs, not {want}")
    samples = run["rss_samples"]
    figures = {
        "messages": memory,
        "outputs": want,
        "slow_rate": slow_rate,
        "seconds": got["seconds"],
        "output_rate": round(want / got["seconds"], 1) if got["seconds"] > 0 else 0.0,
        "peak_rss_mb": round(run["peak_rss"] / 2**20, 1),
        "median_rss_mb": round(sorted(samples)[len(samples) // 2] / 2**20, 1) if samples else 0,
        "processes": run["processes"],
        "samples": len(samples),
    }
    say(
        f"memory: peak RSS {figures['peak_rss_mb']:.0f} MB over {figures['processes']} "
        f"processes ({figures['output_rate']:,.0f} outputs/s)"
    )
    return figures
