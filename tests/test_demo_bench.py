"""`actorflow demo` and `actorflow bench` run end to end and leave no process behind.

No assertion here is about speed: the figures vary with the machine and its load."""

from __future__ import annotations

import json
import re
import signal
import string
import subprocess
import sys
import threading

import psutil
import pytest

from tests.conftest import ROOT, alphabet_file_totals, group_alive

pytestmark = pytest.mark.integration


def actorflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "actorflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def leftovers(needle: str) -> list[str]:
    """Command lines of live processes that contain `needle`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if needle in cmdline:
            found.append(f"{proc.pid}: {cmdline}")
    return found


def assert_cleaned_up(stderr: str) -> None:
    control = re.search(r"control (127\.0\.0\.1:\d+)", stderr)
    assert control, stderr
    assert leftovers(f"--control {control.group(1)}") == []
    group = re.search(r"actor process group (\d+)", stderr)
    if group:
        assert not group_alive(int(group.group(1)))


def test_demo_all_totals_match_and_cleans_up(tmp_path):
    proc = actorflow("demo", "--messages", "20000", "--keep-output", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all 26 totals match" in proc.stdout
    assert "MISMATCH" not in proc.stdout
    assert re.search(r"outputs received\s+20,000", proc.stdout)
    assert_cleaned_up(proc.stderr)
    # Independently of the demo's own verdict: the same input (seed 1, as the demo says),
    # totals summed here, against the last output line of each letter it received.
    assert "seed 1" in proc.stderr
    gen = actorflow("gen", "alphabet", "--messages", "20000", "--seed", "1", "--output",
                    str(tmp_path / "votes.bin"))
    assert gen.returncode == 0, gen.stderr
    want = alphabet_file_totals(tmp_path / "votes.bin")
    lines = (tmp_path / "received.txt").read_text().splitlines()
    assert len(lines) == 20_000
    got: dict[str, list[int]] = {}
    for line in lines:
        letter, _, total = line.partition(" => ")
        got.setdefault(letter, []).append(int(total))
    assert {k: v[-1] for k, v in got.items()} == want
    assert all(v == sorted(v) for v in got.values()), "running totals only grow"


def test_demo_sigterm_stops_everything():
    proc = subprocess.Popen(
        [sys.executable, "-m", "actorflow", "demo", "--messages", "3000000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    sending = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "sending" in line:
                sending.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert sending.wait(60), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    stderr = "".join(lines)
    assert code == 130, stderr
    assert "interrupted" in stderr
    assert_cleaned_up(stderr)


def test_bench_json_result_one_and_two_workers(tmp_path):
    proc = actorflow(
        "bench", "alphabet", "--messages", "50000", "--workers", "2", "--json", "--bytewax",
        "--keep-output", str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Independently of the bench's own checks: what each run's receiver got, against
    # totals computed here from the same generated input (seed 1).
    gen = actorflow("gen", "alphabet", "--messages", "50000", "--seed", "1", "--output",
                    str(tmp_path / "votes.bin"))
    assert gen.returncode == 0, gen.stderr
    want = alphabet_file_totals(tmp_path / "votes.bin")
    for name in ("run1-1workers.out", "run1-2workers.out"):
        lines = (tmp_path / name).read_text().splitlines()
        assert len(lines) == 50_000, name
        last = {}
        for line in lines:
            letter, _, total = line.partition(" => ")
            last[letter] = int(total)
        assert last == want, name
    assert result["cpu_us_per_record"] > 0 and result["multi_cpu_us_per_record"] > 0
    if "bytewax_skipped" not in result:
        assert result["bytewax_rate"] > 0
        assert result["ratio_to_bytewax"] == pytest.approx(
            result["cluster_rate"] / result["bytewax_rate"], 0.01
        )
    assert result["messages"] == 50_000 and result["received"] == 50_000
    assert result["baseline_rate"] > 0 and result["cluster_rate"] > 0
    assert result["ratio"] == pytest.approx(result["cluster_rate"] / result["baseline_rate"], 0.01)
    assert result["multi_rate"] > 0
    assert result["scaling"] == pytest.approx(result["multi_rate"] / result["cluster_rate"], 0.01)
    assert set(result["bars"]) == {"rate_150k", "ratio_0.2", "scaling_1.0"}
    assert {r["workers"] for r in result["runs"].values()} == {1, 2}
    for control in re.findall(r"control (127\.0\.0\.1:\d+)", proc.stderr):
        assert leftovers(f"--control {control}") == []
    assert leftovers("actorflow.tools.send") == []


def test_bench_rejects_bad_flags():
    proc = actorflow("bench", "alphabet", "--workers", "0", timeout=30)
    assert proc.returncode == 2
    assert "--workers must be at least 1" in proc.stderr


def test_bench_word_count_latency_and_memory(tmp_path):
    proc = actorflow(
        "bench", "word_count", "--messages", "4000", "--workers", "2", "--json", "--latency",
        "--memory", "12000", "--slow-rate", "40000", "--keep-output", str(tmp_path),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The same generated lines (seed 1), counted here, against what each receiver got.
    from actorflow.tools.gen import word_lines

    strip = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb"
    want: dict[str, int] = {}
    words = 0
    for line in word_lines(4000, 1):
        for token in line.lower().split():
            word = token.strip(strip)
            if word:
                want[word] = want.get(word, 0) + 1
                words += 1
    for name in ("run1-1workers.out", "run1-2workers.out"):
        lines = (tmp_path / name).read_text().splitlines()
        assert len(lines) == words, name
        last = {}
        for line in lines:
            word, _, count = line.partition(" => ")
            last[word] = int(count)
        assert last == want, name
    assert result["app"] == "word_count" and result["outputs"] == words
    assert result["received"] == words and result["cluster_output_rate"] > 0
    # Latency runs check their outputs byte for byte against the plain loop's (or fail).
    for mode in ("paced", "saturated"):
        lat = result["latency"][mode]
        assert 0 <= lat["p50"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
        assert lat["samples"] == words
    assert result["latency"]["paced"]["rate"] == pytest.approx(result["cluster_rate"] / 2, 0.01)
    mem = result["memory"]
    assert mem["messages"] == 12_000 and mem["outputs"] == 3 * words
    assert mem["peak_rss_mb"] > 0 and mem["processes"] >= 4
    assert leftovers("actorflow.tools.probe") == []
    for control in re.findall(r"control (127\.0\.0\.1:\d+)", proc.stderr):
        assert leftovers(f"--control {control}") == []
