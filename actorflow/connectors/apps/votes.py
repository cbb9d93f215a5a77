"""Votes from a connector source, a running total per letter, to a connector or TCP sink.

A message is ``b"<letter> <votes>"`` (what a Redis publisher, a RabbitMQ queue, a UDP
datagram or a PostgreSQL NOTIFY carries). With ``--sink-connector-port P`` the totals go to a
sink connector on port P as ``{"letter": l, "total": t}`` (a row for the PostgreSQL
insert sink, a field for the Redis hash sink); otherwise to the TCP sink at ``--out``
as alphabet's ``"l => t\\n"`` frames.
"""

from __future__ import annotations

import argparse
import json
import struct

import actorflow as wallaroo
import actorflow.experimental

COOKIE = "votes-cookie"


def application_setup(args):
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--sink-connector-port", type=int)
    parser.add_argument("--source-cookie", default=COOKIE)
    parser.add_argument("--max-credits", type=int, default=2000)
    mine, _ = parser.parse_known_args(args)
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    source = actorflow.experimental.SourceConnectorConfig(
        "votes",
        encoder=encode_vote,
        decoder=decode_vote,
        host=in_host,
        port=in_port,
        cookie=mine.source_cookie,
        max_credits=mine.max_credits,
        refill_credits=max(1, mine.max_credits // 4),
    )
    if mine.sink_connector_port:
        sink = actorflow.experimental.SinkConnectorConfig(
            "totals",
            encoder=encode_total,
            decoder=decode_total,
            port=mine.sink_connector_port,
            cookie=mine.source_cookie,
        )
    else:
        out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
        sink = wallaroo.TCPSinkConfig(out_host, out_port, encode_line)
    pipeline = wallaroo.source(in_name, source).key_by(letter_of).to(add_votes).to_sink(sink)
    return wallaroo.build_application("connector votes", pipeline)


class TotalVotes:
    def __init__(self):
        self.total = 0


@actorflow.experimental.stream_message_encoder
def encode_vote(data):
    return data if isinstance(data, bytes) else str(data).encode()


@actorflow.experimental.stream_message_decoder
def decode_vote(payload):
    letter, votes = payload.split()
    return (letter.decode(), int(votes))


@wallaroo.key_extractor
def letter_of(vote):
    return vote[0]


@wallaroo.state_computation(name="add votes", state=TotalVotes)
def add_votes(vote, state):
    state.total += vote[1]
    return (vote[0], state.total)


@actorflow.experimental.stream_message_encoder
def encode_total(letter_total):
    return json.dumps({"letter": letter_total[0], "total": letter_total[1]}).encode()


@actorflow.experimental.stream_message_decoder
def decode_total(data):
    return json.loads(data)


@wallaroo.encoder
def encode_line(letter_total):
    line = f"{letter_total[0]} => {letter_total[1]}\n".encode()
    return struct.pack(">I", len(line)) + line
