"""Vote merge: alphabet votes from two sources, merged into one leader board.

Exercises ``computation``, ``merge`` and ``collect``. The first two ``--in``
addresses are the two sources (``--in east@127.0.0.1:7030,west@127.0.0.1:7031``);
a source is named after its ``--in`` name. Both carry alphabet frames: the
payload is one ASCII letter + big-endian uint32 votes.

Each source's records go through a stateless step ``tag <source name>`` that
turns ``(letter, votes)`` into ``(source name, letter, votes)``; the two
tagged streams are merged, then collected to a single key, so one
``leader board`` state sees every vote. It keeps the total of each letter over
both sources and the current leader: the letter with the highest total, ties
broken by the alphabetically smallest letter. The source tag travels with the
record (it shows in error logs) but does not change the totals.

Output, one per input record: the framed line
``"<letter> => <total> (leader <L> with <N>)\n"``, where total is the letter's
total so far and L / N the leading letter and its total after this vote.
For a given arrival order the output is fully determined; the order in which
the two sources interleave is whatever order the records arrive in.
Run: ``actorflow worker --app actorflow.examples.vote_merge -c conf/vote_merge.conf``
(``actorflow examples`` prints where the installed ``vote_merge.conf`` is), or, in a
checkout, ``python apps/vote_merge.py -c conf/vote_merge.conf``.
"""

import struct

import actorflow as wallaroo


def application_setup(args):
    inputs = wallaroo.tcp_parse_input_addrs(args)
    if len(inputs) < 2:
        msg = "vote_merge needs two --in addresses: --in name1@host:port,name2@host:port"
        raise wallaroo.ApplicationError(msg)
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    first, second = (
        wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode_votes)).to(
            tagger(name)
        )
        for name, host, port in inputs[:2]
    )
    pipeline = (
        first.merge(second)
        .collect()
        .to(update_leader_board)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_standing))
    )
    return wallaroo.build_application("vote_merge", pipeline)


def tagger(source_name):
    """A stateless step that tags each (letter, votes) with ``source_name``."""

    @wallaroo.computation(name=f"tag {source_name}")
    def tag(vote):
        return (source_name, vote[0], vote[1])

    return tag


class LeaderBoard:
    """The totals of every letter and the current leader (a single instance)."""

    def __init__(self):
        self.totals = {}
        self.leader = None  # (letter, total)

    def add(self, letter, votes):
        total = self.totals.get(letter, 0) + votes
        self.totals[letter] = total
        # Totals never go down, so only the letter just updated can take the lead.
        leader = self.leader
        if leader is None or leader[0] == letter or (-total, letter) < (-leader[1], leader[0]):
            self.leader = (letter, total)
        return total


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_votes(payload):
    letter, votes = struct.unpack(">sI", payload)
    return (letter.decode(), votes)


@wallaroo.state_computation(name="leader board", state=LeaderBoard)
def update_leader_board(tagged_vote, board):
    _source, letter, votes = tagged_vote
    total = board.add(letter, votes)
    return (letter, total, board.leader[0], board.leader[1])


@wallaroo.encoder
def encode_standing(standing):
    letter, total, leader, leader_total = standing
    line = f"{letter} => {total} (leader {leader} with {leader_total})\n".encode()
    return struct.pack(">I", len(line)) + line


if __name__ == "__main__":
    wallaroo.run(__file__)
