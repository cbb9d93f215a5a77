"""The app ``actorflow bench windows`` measures: keyed votes, with or without windows.

Input frame payload: a 6-byte key, a big-endian uint32 of votes, a big-endian uint64
event time in nanoseconds. With ``--windows``: ``key_by`` key, 1-second tumbling
windows summing the votes (event time from the record), one output per key and window:
``"<key> window => <sum>\\n"``. Without: the same pipeline with a running total per key
instead of windows (the alphabet app's shape), one output per record:
``"<key> <second> => <total>\\n"``.
"""

import struct

import actorflow as wallaroo

PAYLOAD = struct.Struct(">6sIQ")


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    config = wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode)
    sink = wallaroo.TCPSinkConfig(out_host, out_port, encode)
    if "--windows" in args:
        votes = wallaroo.source("votes", config, event_time=event_time)
        step = wallaroo.range_windows(wallaroo.seconds(1)).over(SumVotes)
    else:
        votes = wallaroo.source("votes", config)
        step = add_votes
    return wallaroo.build_application("windows_bench", votes.key_by(key).to(step).to_sink(sink))


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(payload):
    return PAYLOAD.unpack(payload)


@wallaroo.key_extractor
def key(vote):
    return vote[0]


def event_time(vote):
    return vote[2]


class SumVotes(wallaroo.Aggregation):
    def initial_accumulator(self):
        return 0

    def update(self, vote, total):
        return total + vote[1]

    def combine(self, a, b):
        return a + b

    def output(self, key, total):
        return (key, "window", total)


class Total:
    def __init__(self):
        self.total = 0


@wallaroo.state_computation(name="add votes", state=Total)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], vote[2] // 1_000_000_000, state.total)


@wallaroo.encoder
def encode(out):
    line = f"{out[0].decode()} {out[1]} => {out[2]}\n".encode()
    return struct.pack(">I", len(line)) + line


def frames(messages, keys, seconds, seed=1):
    """``messages`` frames over ``keys`` keys, event times spread evenly over ``seconds``
    seconds, then one frame a day later that moves the watermark past every window.
    Returns (frames, the windowed outputs expected: one per key and second)."""
    import random

    rng = random.Random(seed)
    names = [f"k{i:05d}".encode() for i in range(keys)]
    step = seconds * 1_000_000_000 // max(messages, 1)
    out, windows = [], set()
    pack = PAYLOAD.pack
    for i in range(messages):
        k = names[rng.randrange(keys)]
        ts = i * step
        windows.add((k, ts // 1_000_000_000))
        payload = pack(k, rng.randrange(1, 10), ts)
        out.append(struct.pack(">I", len(payload)) + payload)
    payload = pack(names[0], 0, (seconds + 86_400) * 1_000_000_000)
    out.append(struct.pack(">I", len(payload)) + payload)
    return out, len(windows)
