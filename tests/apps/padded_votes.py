"""Alphabet votes with padding: frames of a letter, big-endian uint32 votes and any
number of padding bytes (ignored), so a few thousand records fill the kernel's socket
buffers. Summed per letter; output ``"<letter> => <total>\\n"`` (framed)."""

import struct

import actorflow as wallaroo


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(payload):
    letter, votes = struct.unpack_from(">sI", payload)
    return (letter.decode(), votes)


@wallaroo.key_extractor
def letter_of(vote):
    return vote[0]


class Total:
    def __init__(self):
        self.total = 0


@wallaroo.state_computation(name="add votes", state=Total)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)


@wallaroo.encoder
def encode(letter_total):
    line = f"{letter_total[0]} => {letter_total[1]}\n".encode()
    return struct.pack(">I", len(line)) + line


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode_votes))
    pipeline = (
        votes.key_by(letter_of)
        .to(add_votes)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("padded_votes", pipeline)
