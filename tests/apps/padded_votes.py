"""Alphabet votes with padding: frames of a letter, big-endian uint32 votes and any
number of padding bytes (ignored), so a few thousand records fill the kernel's socket
buffers. Summed per letter; output ``"<letter> => <total>\\n"`` (framed)."""

import struct

import actorflow as wallaroo
from actorflow.examples.alphabet import add_votes, encode_votes, extract_letter


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(payload):
    letter, votes = struct.unpack_from(">sI", payload)
    return (letter.decode(), votes)


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode_votes))
    pipeline = (
        votes.key_by(extract_letter)
        .to(add_votes)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes))
    )
    return wallaroo.build_application("padded_votes", pipeline)
