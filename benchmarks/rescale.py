"""Rescale figures: processing pause and throughput before, during and after a grow
2 -> 3 and a shrink 3 -> 2 under load. Run: ``python benchmarks/rescale.py``.

A 2-worker cluster of the per-key sequence app (``tests/apps/last_four.py``: each key
keeps its last four values) takes a steady stream from a replaying sender over
``--keys`` keys; a third worker joins with --join, then leaves with
``actorflow shrink``. It prints, per rescale, the pause the topology measured
(processing stopped -> running again), the longest gap between outputs at the
receiver, and the output rate (outputs/s) in the seconds before, during and after;
then whether every key's sequence is whole and complete (exact state).
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actorflow.control import query_status, shrink_cluster  # noqa: E402
from actorflow.testing import Cluster, free_port  # noqa: E402
from actorflow.tools.receive import Receiver  # noqa: E402

APP = str(ROOT / "tests" / "apps" / "last_four.py")
WINDOW = 2.0  # seconds of output rate measured before and after a rescale


def frames_for(keys: int, rounds: int) -> list[bytes]:
    payloads = (f"k{k}:{n}".encode() for n in range(1, rounds + 1) for k in range(keys))
    return [struct.pack(">I", len(p)) + p for p in payloads]


def rate(stamps: list[float], start: float, end: float) -> float:
    return sum(1 for t in stamps if start <= t < end) / max(end - start, 1e-9)


def longest_gap(stamps: list[float], start: float, end: float) -> float:
    inside = [t for t in stamps if start <= t <= end]
    return max((b - a for a, b in zip(inside, inside[1:], strict=False)), default=0.0)


def whole(outputs: list[bytes], keys: int, rounds: int) -> bool:
    last: dict[str, int] = {}
    for x in outputs:
        key, _, values = x.decode().rstrip("\n").partition(":")
        got = [int(v) for v in values.split(",")]
        if got != list(range(max(1, got[-1] - 3), got[-1] + 1)):
            return False
        last[key] = max(last.get(key, 0), got[-1])
    return last == {f"k{k}": rounds for k in range(keys)}


def wait_rescaled(
    control: tuple[str, int], workers: int, secret: Any, timeout: float = 60
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = query_status(control, 5, secret)
        except Exception:  # no answer this moment: ask again
            s = {}
        if s.get("worker_count") == workers and s.get("rescale") is None and s["last_rescale"]:
            return s
        time.sleep(0.1)
    raise SystemExit(f"the cluster did not reach {workers} workers in {timeout:g} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=12, help="values per key")
    args = p.parse_args()
    stamps: list[float] = []
    outputs: list[bytes] = []
    lock = threading.Lock()

    def sink(payloads: list[bytes]) -> None:
        now = time.time()
        with lock:
            stamps.extend([now] * len(payloads))
            outputs.extend(payloads)

    port = free_port()
    receiver = Receiver("127.0.0.1", port, framed=True, sink=sink, log=None)
    receiver.start()
    cluster = Cluster(
        APP,
        2,
        [port],
        source_name="seq",
        log_dir=tempfile.mkdtemp(prefix="actorflow-rescale-"),
        extra=["--time-between-checkpoints", "1"],
    )
    frames = frames_for(args.keys, args.rounds)
    try:
        cluster.start()
        control = ("127.0.0.1", cluster.control)
        sender = cluster.send_acked(
            0, frames, "steady", batch_size=500, interval_ms=5, patience=120, log=None
        )
        time.sleep(WINDOW + 1)
        print(
            f"{args.keys} keys, {len(frames)} records; rates in outputs/s over {WINDOW:g} s\n"
            "rescale       moved  pause(topology)  longest gap  before   during    after"
        )
        for what in ("grow 2->3", "shrink 3->2"):
            began = time.time()
            if what.startswith("grow"):
                cluster.grow().wait_ready(60)
                status = wait_rescaled(control, 3, cluster.secret())
            else:
                shrink_cluster(control, count=1, timeout=60, secret=cluster.secret())
                status = wait_rescaled(control, 2, cluster.secret())
            ended = time.time()
            time.sleep(WINDOW)
            r = status["last_rescale"]
            with lock:
                seen = list(stamps)
            print(
                f"{what:<12} {r['partitions_moved']:>6} {r['pause_seconds']:>13.2f} s "
                f"{longest_gap(seen, began, ended + WINDOW):>10.2f} s "
                f"{rate(seen, began - WINDOW, began):>8.0f} {rate(seen, began, ended):>8.0f} "
                f"{rate(seen, ended, ended + WINDOW):>8.0f}",
                flush=True,
            )
        result = sender.finish(300)
        deadline = time.time() + 60
        ok = False
        while time.time() < deadline and not ok:
            with lock:
                ok = whole(outputs, args.keys, args.rounds)
            time.sleep(0.5)
        print(f"sender: {result}")
        print(f"every key's sequence whole and complete (exact state): {ok}")
        return 0 if ok else 1
    finally:
        cluster.stop()
        receiver.stop()


if __name__ == "__main__":
    sys.exit(main())
