"""Sequence detector: per key, the last four values, which must stay contiguous and
increasing (the shape of Wallaroo's ``multi_partition_detector``).

Each key's values arrive as 1, 2, 3, ...; a state step keeps a ring of the key's last
four and outputs it, so a lost, repeated or reordered record shows as a gap. ``--depth
N`` chains N rounds of ``key_by``, ``trace_id``, ``key_by`` and the ring. ``--source
gensource`` generates ``--partitions`` keys itself (on the initializer only, checked
with ``wallaroo._ARGS`` as Wallaroo's app does); otherwise a TCP source reads frames of
a big-endian uint64 value then the key. The module defines ``serialize`` and
``deserialize``, so records travel between actors as the bytes they make, and every
message counts the actor hops it took that way.
Output, one framed JSON line per record and round:
``{"key": "3", "window": [4, 5, 6, 7], "trace": "...", "hops": 2}``.
"""

import argparse
import json
import struct

import actorflow as wallaroo


def application_setup(args):
    p = argparse.ArgumentParser("sequence_detector", add_help=False)
    p.add_argument("--depth", type=int, default=1)
    p.add_argument("--source", choices=["tcp", "gensource"], default="tcp")
    p.add_argument("--partitions", type=int, default=40)
    p.add_argument("--values", type=int, default=100)
    opts = p.parse_known_args(args)[0]
    if "--cluster-initializer" not in wallaroo._ARGS:
        opts.partitions = 0
    if opts.source == "gensource":
        config = wallaroo.GenSourceConfig("Detector", Generator(opts.partitions, opts.values))
    else:
        _, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
        config = wallaroo.TCPSourceConfig("Detector", in_host, in_port, decoder)
    pipeline = wallaroo.source("Detector", config)
    for _ in range(opts.depth):
        pipeline = pipeline.key_by(extract_key).to(trace_id).key_by(extract_key).to(ring)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    pipeline = pipeline.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return wallaroo.build_application("sequence_detector", pipeline)


class Message:
    def __init__(self, key, value, trace="", window=(), hops=0):
        self.key = key
        self.value = value
        self.trace = trace
        self.window = tuple(window)
        self.hops = hops


def serialize(msg):
    """Records between actors: JSON, not pickle (Wallaroo's app-level hook)."""
    return json.dumps([msg.key, msg.value, msg.trace, list(msg.window), msg.hops]).encode()


def deserialize(data):
    key, value, trace, window, hops = json.loads(data)
    return Message(key, value, trace, window, hops + 1)


class Generator:
    def __init__(self, partitions, values):
        self.partitions = partitions
        self.values = values

    def initial_value(self):
        return Message("0", 1) if self.partitions else None

    def apply(self, m):
        key = (int(m.key) + 1) % self.partitions
        value = m.value + (1 if key == 0 else 0)
        return Message(str(key), value) if value <= self.values else None


@wallaroo.key_extractor
def extract_key(msg):
    return msg.key


@wallaroo.computation(name="trace_id")
def trace_id(msg):
    return Message(msg.key, msg.value, msg.trace + ".trace", msg.window, msg.hops)


class Ring:
    """The last four values of a key (zeros before the first ones)."""

    def __init__(self):
        self.values = [0, 0, 0, 0]


@wallaroo.state_computation(name="ring", state=Ring)
def ring(msg, state):
    state.values = [*state.values[1:], msg.value]
    return Message(msg.key, msg.value, msg.trace + ".ring", state.values, msg.hops)


@wallaroo.encoder
def encoder(msg):
    s = json.dumps(
        {"key": msg.key, "window": list(msg.window), "trace": msg.trace, "hops": msg.hops}
    ).encode()
    return struct.pack(">I", len(s)) + s


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    return Message(bs[8:].decode(), struct.unpack(">Q", bs[:8])[0])


def frame(key, value):
    """One input frame (header included), for senders and tests."""
    payload = struct.pack(">Q", value) + key.encode()
    return struct.pack(">I", len(payload)) + payload


if __name__ == "__main__":
    wallaroo.run(__file__)
