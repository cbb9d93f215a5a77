"""A per-key sequence app, the shape of Wallaroo's multi_partition_detector.

Each input is ``"<key>:<n>"``; each key's n run 1, 2, 3, ... The state keeps the key's
last four values; each record's output is ``"<key>:<values>\\n"``. While the state is
exact, the output for n is always ``max(1, n-3) .. n``: a value lost, doubled or out of
order in the state shows in every later output of that key.
"""

import struct

import actorflow as wallaroo


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(payload):
    key, _, n = payload.decode().partition(":")
    return (key, int(n))


@wallaroo.key_extractor
def key_of(record):
    return record[0]


class LastFour:
    def __init__(self):
        self.values = []


@wallaroo.state_computation(name="last four", state=LastFour)
def keep_last_four(record, state):
    state.values = [*state.values, record[1]][-4:]
    return (record[0], tuple(state.values))


@wallaroo.encoder
def encode(out):
    line = f"{out[0]}:{','.join(map(str, out[1]))}\n".encode()
    return struct.pack(">I", len(line)) + line


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    inputs = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode))
    pipeline = (
        inputs.key_by(key_of)
        .to(keep_last_four)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("last_four", pipeline)
