"""One test each for documented rules that no other test pins down: the garbage run and
its reset, the epoch fence, a lost worker noticed in the documented time, and a slow
checkpoint abandoned while the next ones complete."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from actorflow.api import decoder
from actorflow.control import query_status
from actorflow.errors import FrameError
from actorflow.messages import Batch
from actorflow.runtime.membership import HEARTBEAT_EVERY, LOST_AFTER
from actorflow.runtime.source import GARBAGE_RUN, FrameDecoder
from actorflow.runtime.stage import StageActor
from actorflow.runtime.steps import ErrorLog
from actorflow.testing import Cluster
from actorflow.tools.gen import alphabet_frames
from actorflow.tools.send import send
from tests.conftest import APPS

ALPHABET = str(APPS / "alphabet.py")


@decoder(header_length=4, length_fmt=">I")
def decode_vote(payload: bytes) -> tuple[str, int]:
    letter, votes = struct.unpack(">sI", payload)
    return (letter.decode(), votes)


GOOD = struct.pack(">IsI", 5, b"a", 1)
BAD = struct.pack(">I", 2) + b"??"  # a frame the decoder rejects


def test_garbage_closes_a_connection_only_after_100_bad_frames_in_a_row():
    # README: "100 frames in a row the decoder rejects, closes that one connection"
    frames = FrameDecoder(decode_vote, 1 << 20, ErrorLog("decoder", 5), "peer")
    run = BAD * (GARBAGE_RUN - 1) + GOOD  # one short of the limit, then a good frame
    assert frames.feed(run + run) == [(None, ("a", 1)), (None, ("a", 1))]
    assert frames.feed(BAD * (GARBAGE_RUN - 1)) == []  # the count restarted at each good one
    with pytest.raises(FrameError, match=f"{GARBAGE_RUN} frames in a row"):
        frames.feed(BAD)


def test_a_batch_of_an_older_epoch_is_dropped_unprocessed():
    # README: "batches of an older epoch are dropped wherever they arrive"
    stage = StageActor()
    stage.epoch = 3
    stage.receiveMessage(Batch(0, 0, [(None, ("a", 1))], epoch=2), "an old actor")
    assert stage.stale_dropped == 1 and stage.records_in == 0


@pytest.mark.integration
def test_a_crashed_worker_is_noticed_within_the_documented_time(tmp_path, collector):
    # README: "misses it and is declared lost after 3 s"
    cluster = Cluster(ALPHABET, 2, [collector.port], source_name="alphabet",
                      log_dir=str(tmp_path))
    with cluster:
        cluster.start()
        victim = cluster.workers[1]
        victim.proc.kill()
        os.killpg(victim.pgid, signal.SIGKILL)
        killed = time.monotonic()
        while "worker2" not in query_status(("127.0.0.1", cluster.control))["lost_workers"]:
            assert time.monotonic() - killed < 20, "the lost worker was never noticed"
            time.sleep(0.05)
        took = time.monotonic() - killed
    # Heartbeats go out every HEARTBEAT_EVERY; a status round trip adds a little.
    assert took <= LOST_AFTER + 2 * HEARTBEAT_EVERY + 1.0, took


SLOW_ONCE_APP = '''
import os, time
import actorflow as wallaroo
from alphabet import decode_votes, extract_letter, encode_votes


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(
        "alphabet", wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode_votes))
    return wallaroo.build_application("slow_once", votes.key_by(extract_letter)
        .to(add_votes).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes)))


class Total:
    def __init__(self):
        self.total = 0

    def __getstate__(self):
        marker = os.environ["ACTORFLOW_TEST_SLOW_MARK"]
        if not os.path.exists(marker):  # the first snapshot takes longer than allowed
            open(marker, "w").close()
            time.sleep(11)
        return {"total": self.total}


@wallaroo.state_computation(name="add votes", state=Total)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)
'''


@pytest.mark.integration
def test_a_checkpoint_that_takes_too_long_is_abandoned(tmp_path, collector, monkeypatch):
    # README: "A checkpoint that fails ... or takes too long is abandoned and reported in
    # actorflow status; processing goes on."
    app = tmp_path / "slow_once.py"
    app.write_text(SLOW_ONCE_APP)
    monkeypatch.setenv("PYTHONPATH", f"{APPS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    monkeypatch.setenv("ACTORFLOW_TEST_SLOW_MARK", str(tmp_path / "slow"))
    cluster = Cluster(str(app), 1, [collector.port], source_name="alphabet",
                      log_dir=str(tmp_path), extra=["--time-between-checkpoints", "0.3"])
    with cluster:
        cluster.start()
        send("127.0.0.1", cluster.inputs[0], alphabet_frames(2_000, seed=4), log=None)
        deadline = time.monotonic() + 40
        while True:
            status = query_status(("127.0.0.1", cluster.control))
            if "did not complete in time" in status["last_checkpoint_failure"]:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        abandoned = status["last_checkpoint"]
        send("127.0.0.1", cluster.inputs[0], alphabet_frames(2_000, seed=5), log=None)
        while query_status(("127.0.0.1", cluster.control))["last_checkpoint"] <= abandoned:
            assert time.monotonic() < deadline, "no checkpoint completed after the slow one"
            time.sleep(0.2)
        assert collector.wait_for(4_000, 30), "processing did not go on"
