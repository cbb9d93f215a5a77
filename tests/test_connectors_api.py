"""The connector names and frames, in one process: Wallaroo's ``experimental`` API, the
script's command line, the wire frames, and apps of the shape of Wallaroo's window and
partition detectors (which import ``wallaroo.experimental``)."""

from __future__ import annotations

import struct
import sys
import textwrap

import pytest

import actorflow as wallaroo
import actorflow.experimental as experimental
from actorflow import testing
from actorflow.connectors import protocol as p
from actorflow.errors import ApplicationError


def test_frames_round_trip_and_are_split_across_reads():
    frames = (
        p.control(p.HELLO, {"cookie": "c"})
        + p.message(7, 42, b"payload", event_time=123, key=b"k")
        + p.message(7, 43, b"", key=None)
        + p.commit(5, p.output_frame(b"one") + p.output_frame(b""))
    )
    splitter = p.FrameSplitter(1 << 16)
    got = []
    for i in range(0, len(frames), 3):  # three bytes at a time
        got += splitter.feed(frames[i : i + 3])
    kinds = [k for k, _ in got]
    assert kinds == [p.HELLO, p.MESSAGE, p.MESSAGE, p.COMMIT]
    assert p.parse_control(got[0][1]) == {"cookie": "c"}
    assert p.parse_message(got[1][1]) == (7, 42, 123, b"k", b"payload")
    assert p.parse_message(got[2][1]) == (7, 43, 0, None, b"")
    assert p.parse_commit(got[3][1]) == (5, [b"one", b""])


def test_an_oversized_or_malformed_frame_is_refused():
    with pytest.raises(p.ProtocolError):
        p.FrameSplitter(100).feed(struct.pack(">IB", 1000, p.MESSAGE))
    with pytest.raises(p.ProtocolError):
        p.parse_control(b"\x80\x03not json, and never unpickled")
    with pytest.raises(p.ProtocolError):
        p.parse_message(b"short")


def test_connector_command_line_as_wallaroo_spelled_it():
    args = ["--application-module", "app", "--connector", "feed", "--feed-topic", "t", "--x", "1"]
    params = experimental.parse_connector_args(args, ["topic"], ["host"])
    assert (params.application, params.connector_name, params.topic, params.host) == (
        "app",
        "feed",
        "t",
        None,
    )
    with pytest.raises(SystemExit):
        experimental.parse_connector_args(args[:4], ["topic"])  # a required param missing


def test_configs_check_their_arguments():
    enc = experimental.stream_message_encoder(lambda m: m)
    dec = experimental.stream_message_decoder(lambda b: b)
    cfg = experimental.SourceConnectorConfig("f", enc, dec, 7000, cookie="c", max_credits=10)
    assert (cfg.host, cfg.port, cfg.max_credits, cfg.refill_credits) == ("127.0.0.1", 7000, 10, 5)
    with pytest.raises(ApplicationError, match="refill_credits"):
        experimental.SourceConnectorConfig("f", enc, dec, 7000, max_credits=5, refill_credits=9)
    with pytest.raises(ApplicationError, match="port"):
        experimental.SourceConnectorConfig("f", enc, dec, "nope")
    with pytest.raises(ApplicationError, match="stream_message_encoder"):
        experimental.SinkConnectorConfig("s", lambda m: m, dec, 7001)
    with pytest.raises(ApplicationError, match="must take 1 argument"):
        experimental.stream_message_decoder(lambda a, b: a)
    sink = experimental.SinkConnectorConfig("s", enc, dec, 7001)
    assert sink.encoder(b"abc") == p.output_frame(b"abc")  # each output framed for read()
    assert wallaroo.experimental is experimental


DETECTOR = '''
    """The shape of Wallaroo's window_detector: three sources, one an at-least-once
    connector, chosen by a flag; the import lines changed."""
    import argparse
    import struct

    import actorflow as wallaroo
    import actorflow.experimental


    def application_setup(args):
        parser = argparse.ArgumentParser("Window Detector")
        parser.add_argument("--source", choices=["tcp", "alo"], default="tcp")
        pargs, _ = parser.parse_known_args(args)
        _, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
        if pargs.source == "tcp":
            source = wallaroo.TCPSourceConfig("Detector", in_host, in_port, decoder)
        else:
            source = wallaroo.experimental.SourceConnectorConfig(
                name="Detector", encoder=encode_feed, decoder=decode_feed, host=in_host,
                port=in_port, cookie="cookie", max_credits=67, refill_credits=10)
        out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
        p = (wallaroo.source("Detector", source)
             .key_by(extract_key)
             .to(wallaroo.count_windows(2).over(Collect))
             .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder)))
        return wallaroo.build_application("window detector", p)


    class Collect(wallaroo.Aggregation):
        def initial_accumulator(self):
            return []
        def update(self, msg, acc):
            acc.append(msg[1])
        def combine(self, a, b):
            return a + b
        def output(self, key, acc):
            return (key, acc)


    @wallaroo.key_extractor
    def extract_key(msg):
        return msg[0]


    @wallaroo.encoder
    def encoder(msg):
        return repr(msg).encode()


    @wallaroo.experimental.stream_message_encoder
    def encode_feed(data):
        return data


    def base_decoder(bs):
        return (bs[8:].decode(), struct.unpack(">Q", bs[:8])[0])


    decoder = wallaroo.decoder(header_length=4, length_fmt=">I")(base_decoder)
    decode_feed = wallaroo.experimental.stream_message_decoder(base_decoder)
'''


@pytest.mark.parametrize("source", ["tcp", "alo"])
def test_an_app_of_the_window_detector_shape_builds_and_runs(tmp_path, monkeypatch, source):
    (tmp_path / "detector_shape.py").write_text(textwrap.dedent(DETECTOR))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("detector_shape", None)
    import detector_shape

    args = ["--in", "Detector@127.0.0.1:7000", "--out", "127.0.0.1:7002", "--source", source]
    feed = [testing.Payload(struct.pack(">Q", v) + b"k1") for v in range(1, 5)]
    out = testing.run(detector_shape, feed, args=args)
    assert out.only() == [("k1", [1, 2]), ("k1", [3, 4])]


def test_the_votes_connector_app_in_one_process():
    from actorflow.connectors.apps import votes

    args = ["--in", "votes@127.0.0.1:7000", "--out", "127.0.0.1:7002"]
    out = testing.run(votes, [testing.Payload(b"a 2"), testing.Payload(b"a 3")], args=args)
    assert out.only() == [("a", 2), ("a", 5)]


def test_the_upstream_acknowledgement_helpers_the_queue_sources_share():
    from actorflow.connectors import common, kafka_sink, kafka_source, rabbitmq_source

    pending = common.PendingAcks()
    for mid, token in [(1, "t1"), (2, "t2"), (5, "t5")]:
        pending.add(mid, token)
    assert pending.acked(0) == []
    assert pending.acked(3) == ["t1", "t2"]
    assert pending.acked(9) == ["t5"]
    assert common.latest_per_partition([("p0", 4), ("p1", 7), ("p0", 9)]) == {"p0": 10, "p1": 8}
    # The untested Kafka scripts import (their client library only when they run) and
    # use only these helpers and the tested client library.
    for module in (kafka_source, kafka_sink, rabbitmq_source):
        assert callable(module.run)
