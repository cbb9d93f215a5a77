"""Recovery figures: how long until a dead worker is noticed, and from its restart until
the cluster processes again. Run: ``python benchmarks/recovery.py [--rounds 3]``.

A 2-worker alphabet cluster takes a steady stream from a replaying sender; each round
SIGKILLs one worker (the joiner, then the initializer, in turn) and restarts it with the
same command. It prints per round: detection (kill -> the initializer's "is lost" line;
for the initializer itself, nobody watches it: n/a), restart -> ready line, restart ->
first output after the restart, and whether the final per-key totals are exact.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actorflow.testing import Cluster, free_port  # noqa: E402
from actorflow.tools.gen import alphabet_frames, alphabet_totals  # noqa: E402
from actorflow.tools.receive import Receiver  # noqa: E402

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*is lost", re.M)


def lost_at(log: str) -> float | None:
    m = _STAMP.findall(log)
    if not m:
        return None
    return datetime.strptime(m[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--messages", type=int, default=400_000)
    args = p.parse_args()
    outputs: list[tuple[float, bytes]] = []
    lock = threading.Lock()

    def sink(payloads: list[bytes]) -> None:
        now = time.time()
        with lock:
            outputs.extend((now, x) for x in payloads)

    port = free_port()
    receiver = Receiver("127.0.0.1", port, framed=True, sink=sink, log=None)
    receiver.start()
    work = tempfile.mkdtemp(prefix="actorflow-recovery-")
    cluster = Cluster(
        str(ROOT / "apps" / "alphabet.py"), 2, [port], source_name="alphabet", log_dir=work
    )
    frames = alphabet_frames(args.messages, seed=7)
    try:
        cluster.start()
        sender = cluster.send_acked(
            0, frames, "steady", batch_size=500, interval_ms=5, patience=120, log=None
        )
        time.sleep(1.0)
        print("round victim      detect  ready  first-output")
        for r in range(args.rounds):
            victim = 1 if r % 2 == 0 else 0
            name = cluster.names[victim]
            w = [x for x in cluster.workers if name in x.log_path][-1]
            initializer = [x for x in cluster.workers if cluster.names[0] in x.log_path][-1]
            killed = time.time()
            w.proc.kill()
            w.proc.wait()
            detect = "n/a"
            if victim != 0:
                deadline = time.time() + 30
                while time.time() < deadline and (lost_at(initializer.log()) or 0) < killed:
                    time.sleep(0.02)
                at = lost_at(initializer.log())
                detect = f"{at - killed:5.2f}s" if at and at >= killed else "none"
            restarted = time.time()
            nw = cluster.start_worker(victim)
            nw.wait_ready(60)
            ready = time.time() - restarted
            deadline = time.time() + 30
            first = None
            while time.time() < deadline and first is None:
                with lock:
                    later = [t for t, _ in outputs[-5000:] if t > restarted + ready]
                first = min(later) - restarted if later else None
                time.sleep(0.01)
            first_s = f"{first:5.2f}s" if first is not None else "none"
            print(f"{r + 1:5d} {name:<11} {detect:>6} {ready:5.2f}s {first_s:>12}", flush=True)
            time.sleep(1.0)
        result = sender.finish(180)
        want = alphabet_totals(frames)
        deadline = time.time() + 30
        while time.time() < deadline:
            last: dict[str, int] = {}
            with lock:
                for _, x in outputs:
                    k, _, v = x.decode().rstrip("\n").partition(" => ")
                    last[k] = int(v)
            if last == want:
                break
            time.sleep(0.2)
        print(f"sender: {result}")
        print(f"final per-key totals exact: {last == want}")
        return 0 if last == want else 1
    finally:
        cluster.stop()
        receiver.stop()


if __name__ == "__main__":
    sys.exit(main())
