"""Window detector: per-key windows that collect the values they get, to check windows.

The shape of Wallaroo's ``testing/correctness/apps/window_detector``: ``key_by``, a
stateless ``trace_id`` step, ``key_by`` again, a window step over ``Collect`` (every
value of the window, in arrival order), then ``split_accumulated`` (one output per
collected value). Options: ``--window-type tumbling|sliding|counting`` (tumbling),
``--window-size`` (ms, or records for counting; 50), ``--window-slide`` (ms; 25),
``--window-delay`` (ms; 0), ``--window-late-policy drop|fire-per-message|
place-in-oldest-window`` (drop), ``--event-time`` (a message's value is its event time
in ms, instead of its ingest time: an actorflow extension), ``--idle-ms`` (with
``--event-time``: how long a quiet source waits before its watermark follows the clock).
Input frame payload: a big-endian uint64 value, then the key as UTF-8.
Output, one framed JSON line per collected value:
``{"key": "k1", "value": 7, "window": [5, 6, 7, 8]}``.
"""

import argparse
import json
import struct

import actorflow as wallaroo


def application_setup(args):
    opts = options(args)
    _, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    config = wallaroo.TCPSourceConfig("Detector", in_host, in_port, decoder)
    if opts.event_time:
        idle = wallaroo.milliseconds(opts.idle_ms) if opts.idle_ms else None
        p = wallaroo.source("Detector", config, event_time=value_time, idle=idle)
    else:
        p = wallaroo.source("Detector", config)
    p = p.key_by(extract_key).to(trace_id).key_by(extract_key)
    if opts.window_type == "counting":
        window = wallaroo.count_windows(opts.window_size)
    else:
        window = wallaroo.range_windows(wallaroo.milliseconds(opts.window_size))
        if opts.window_delay:
            window = window.with_delay(wallaroo.milliseconds(opts.window_delay))
        if opts.window_type == "sliding":
            window = window.with_slide(wallaroo.milliseconds(opts.window_slide))
        window = window.with_late_data_policy(opts.window_late_policy)
    p = p.to(window.over(Collect)).to(split_accumulated)
    p = p.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encoder))
    return wallaroo.build_application("window_detector", p)


def options(args):
    p = argparse.ArgumentParser("window_detector", add_help=False)
    p.add_argument("--window-type", default="tumbling", choices=["tumbling", "sliding", "counting"])
    p.add_argument("--window-size", type=int, default=50)
    p.add_argument("--window-slide", type=int, default=25)
    p.add_argument("--window-delay", type=int, default=0)
    p.add_argument("--window-late-policy", default="drop")
    p.add_argument("--event-time", action="store_true")
    p.add_argument("--idle-ms", type=int, default=0)
    return p.parse_known_args(args)[0]


class Message:
    def __init__(self, key, value):
        self.key = key
        self.value = value

    def __repr__(self):
        return f"({self.key},{self.value})"


@wallaroo.key_extractor
def extract_key(msg):
    return msg.key.split(".")[0]


def value_time(msg):
    return wallaroo.milliseconds(msg.value)


@wallaroo.computation(name="TraceID")
def trace_id(msg):
    return Message(msg.key + ".TraceID", msg.value)


class Collect(wallaroo.Aggregation):
    def initial_accumulator(self):
        return []

    def update(self, msg, accumulator):
        accumulator.append(Message(msg.key + ".Collect", msg.value))

    def combine(self, accumulator1, accumulator2):
        return accumulator1 + accumulator2

    def output(self, key, accumulator):
        keys = {m.key.split(".")[0] for m in accumulator}
        if not accumulator:
            return None
        assert keys == {key}, (keys, key)
        return (key, tuple(m.value for m in accumulator))


@wallaroo.computation_multi(name="Split Accumulated")
def split_accumulated(data):
    key, values = data
    return [(key, v, values) for v in values]


@wallaroo.encoder
def encoder(msg):
    s = json.dumps({"key": msg[0], "value": msg[1], "window": list(msg[2])}).encode()
    return struct.pack(">I", len(s)) + s


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decoder(bs):
    value = struct.unpack(">Q", bs[:8])[0]
    return Message(bs[8:].decode(), value)


def frame(key, value):
    """One input frame (header included), for senders and tests."""
    payload = struct.pack(">Q", value) + key.encode()
    return struct.pack(">I", len(payload)) + payload


if __name__ == "__main__":
    wallaroo.run(__file__)
