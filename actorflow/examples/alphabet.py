"""Alphabet: votes for letters; a running total per letter.

Input frame payload: one ASCII letter + big-endian uint32 votes.
Output, one per input: the framed line ``"<letter> => <total>\n"``.
Run: ``actorflow worker --app actorflow.examples.alphabet -c conf/alphabet.conf``
(``actorflow examples`` prints where the installed ``alphabet.conf`` is), or, in a
checkout, ``python apps/alphabet.py -c conf/alphabet.conf``.
"""

import struct

import actorflow as wallaroo


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(
        "alphabet", wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode_votes)
    )
    pipeline = (
        votes.key_by(extract_letter)
        .to(add_votes)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_votes))
    )
    return wallaroo.build_application("alphabet", pipeline)


class TotalVotes:
    """The running total of one letter (one instance per letter)."""

    def __init__(self):
        self.total = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(payload):
    letter, votes = struct.unpack(">sI", payload)
    return (letter.decode(), votes)


@wallaroo.key_extractor
def extract_letter(vote):
    return vote[0]


@wallaroo.state_computation(name="add votes", state=TotalVotes)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)


@wallaroo.encoder
def encode_votes(letter_total):
    letter, total = letter_total
    line = f"{letter} => {total}\n".encode()
    return struct.pack(">I", len(line)) + line


if __name__ == "__main__":
    wallaroo.run(__file__)
