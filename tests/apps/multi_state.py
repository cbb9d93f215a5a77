"""``state_computation_multi``: per letter, 0, 1 or 2 outputs per vote.

Alphabet votes (letter, votes) are keyed by letter; the state keeps the letter's
running total and returns ``votes % 3`` outputs (an empty list for a multiple of 3):
the framed lines ``"<letter> => <total> #<j>\\n"`` for j = 0 .. votes % 3 - 1.
"""

import struct

import actorflow as wallaroo
from actorflow.examples.alphabet import TotalVotes, decode_votes, extract_letter


@wallaroo.state_computation_multi(name="fan out totals", state=TotalVotes)
def fan_out(vote, state):
    letter, votes = vote
    state.total += votes
    return [(letter, state.total, j) for j in range(votes % 3)]


@wallaroo.encoder
def encode(out):
    line = f"{out[0]} => {out[1]} #{out[2]}\n".encode()
    return struct.pack(">I", len(line)) + line


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    votes = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode_votes))
    pipeline = (
        votes.key_by(extract_letter)
        .to(fan_out)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("multi_state", pipeline)
