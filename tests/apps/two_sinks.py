"""Alphabet votes summed per letter, every output sent to two sinks (``to_sinks``).

``--out HOST:PORT,HOST:PORT``: the first sink gets ``"<letter> => <total>\\n"``, the
second ``"<letter>:<total>\\n"`` (each sink has its own encoder), both framed.
"""

import struct

import actorflow as wallaroo
from actorflow.examples.alphabet import add_votes, decode_votes, extract_letter


def _framed(text):
    line = text.encode()
    return struct.pack(">I", len(line)) + line


@wallaroo.encoder
def encode_arrow(letter_total):
    return _framed(f"{letter_total[0]} => {letter_total[1]}\n")


@wallaroo.encoder
def encode_colon(letter_total):
    return _framed(f"{letter_total[0]}:{letter_total[1]}\n")


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    outs = wallaroo.tcp_parse_output_addrs(args)
    if len(outs) < 2:
        raise wallaroo.ApplicationError("two_sinks needs two --out addresses")
    (h1, p1), (h2, p2) = outs[:2]
    votes = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode_votes))
    pipeline = (
        votes.key_by(extract_letter)
        .to(add_votes)
        .to_sinks(
            [
                wallaroo.TCPSinkConfig(h1, p1, encode_arrow),
                wallaroo.TCPSinkConfig(h2, p2, encode_colon),
            ]
        )
    )
    return wallaroo.build_application("two_sinks", pipeline)
