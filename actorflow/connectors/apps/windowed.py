"""Votes in 1-second tumbling windows of the event time their connector gives them.

A message is ``b"<letter> <ms>"``: the connector writes it with event time ``ms``
milliseconds (since the epoch); each window's output is ``"<letter> <first ms> <last
ms> <count>"``, so a test can check that windows group by the connector's event time.
"""

from __future__ import annotations

import struct

import actorflow as wallaroo
import actorflow.experimental


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    source = actorflow.experimental.SourceConnectorConfig(
        "stamped", encoder=encode, decoder=decode, host=in_host, port=in_port, cookie="c"
    )
    pipeline = (
        wallaroo.source(in_name, source)
        .key_by(lambda vote: vote[0])
        .to(wallaroo.range_windows(wallaroo.seconds(1)).over(Span))
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_line))
    )
    return wallaroo.build_application("connector windows", pipeline)


class Span(wallaroo.Aggregation):
    def initial_accumulator(self):
        return [None, None, 0]

    def update(self, vote, acc):
        ms = vote[1]
        acc[0] = ms if acc[0] is None else min(acc[0], ms)
        acc[1] = ms if acc[1] is None else max(acc[1], ms)
        acc[2] += 1

    def combine(self, a, b):
        return [min(a[0], b[0]), max(a[1], b[1]), a[2] + b[2]]

    def output(self, letter, acc):
        return f"{letter} {acc[0]} {acc[1]} {acc[2]}"


@actorflow.experimental.stream_message_encoder
def encode(data):
    return data


@actorflow.experimental.stream_message_decoder
def decode(payload):
    letter, ms = payload.split()
    return (letter.decode(), int(ms))


@wallaroo.encoder
def encode_line(line):
    data = line.encode()
    return struct.pack(">I", len(data)) + data
