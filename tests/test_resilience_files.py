"""Resilience files: atomic writes, round trips, and what clean removes."""

from __future__ import annotations

import os

from actorflow.resilience import (
    ClusterRecord,
    ClusterState,
    WorkerFiles,
    atomic_write,
    clean,
    read_cluster,
    read_offsets,
    read_snapshot,
    read_state,
    stale_hint,
    write_cluster,
    write_offsets,
    write_snapshot,
    write_state,
)


def test_atomic_write_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f"
    atomic_write(str(path), b"one")
    atomic_write(str(path), b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["f"]


def test_round_trips(tmp_path):
    files = WorkerFiles(str(tmp_path), "word count", "w-1")
    assert read_cluster(files) is None and read_state(files) is None
    record = ClusterRecord("cid", "word count", "/a.py", "w-1", True, "h:1", 2, [["w-1", "h:1"]])
    write_cluster(files, record)
    assert read_cluster(files) == record
    state = ClusterState("cid", 7, 3, ["w-1", "w2"], {"actors": {("s", "w2"): "addr"}})
    write_state(files, state)
    assert read_state(files) == state
    write_snapshot(files.snapshot("state2", 7), {"a": [1, 2]})
    assert read_snapshot(files.snapshot("state2", 7)) == {"a": [1, 2]}
    write_offsets(files.offsets("source0", 6), {"votes": 12})
    write_offsets(files.offsets("source0", 7), {"votes": 15})
    assert read_offsets(files.offsets("source0", 7)) == {"votes": 15}
    files.forget_before("source0", 7)
    assert not os.path.exists(files.offsets("source0", 6))
    assert os.path.exists(files.offsets("source0", 7))


def test_a_damaged_cluster_file_is_refused_by_name(tmp_path):
    files = WorkerFiles(str(tmp_path), "alphabet", "w1")
    (tmp_path / os.path.basename(files.cluster)).write_text("{not json")
    try:
        read_cluster(files)
    except ValueError as exc:
        assert files.cluster in str(exc)
    else:
        raise AssertionError("a damaged file was trusted")


def test_clean_removes_one_apps_files_only(tmp_path):
    word = WorkerFiles(str(tmp_path), "word", "w1")
    word_count = WorkerFiles(str(tmp_path), "word-count", "w1")
    for f in (word, word_count):
        write_offsets(f.offsets("source0", 1), {})
    (tmp_path / "unrelated.txt").write_text("keep")
    removed = clean(str(tmp_path), "word")
    assert removed == [word.offsets("source0", 1)]
    assert os.path.exists(word_count.offsets("source0", 1))
    assert clean(str(tmp_path)) == [word_count.offsets("source0", 1)]
    assert os.listdir(tmp_path) == ["unrelated.txt"]
    hint = stale_hint(str(tmp_path), ["/x/a", "/x/b"])
    assert "/x/a, /x/b" in hint and f"actorflow clean --resilience-dir {tmp_path}" in hint
