"""Word count: a running count per word.

Input frame payload: one line of UTF-8 text.
Each line is lower-cased and split on whitespace; punctuation (ASCII, and
typographic quotes) is stripped from both ends of every word, and words left
empty are dropped, so ``'"Hello, world!"'`` gives ``hello`` and ``world``.
Output, one per word occurrence: the framed line ``"<word> => <count>\n"``,
where count is how often that word has been seen so far.
Run: ``actorflow worker --app actorflow.examples.word_count -c conf/word_count.conf``
(``actorflow examples`` prints where the installed ``word_count.conf`` is), or, in a
checkout, ``python apps/word_count.py -c conf/word_count.conf``.
"""

import string
import struct

import actorflow as wallaroo

PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb"


def application_setup(args):
    in_name, in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    lines = wallaroo.source(
        "word count", wallaroo.TCPSourceConfig(in_name, in_host, in_port, decode_line)
    )
    pipeline = (
        lines.to(split)
        .key_by(extract_word)
        .to(count_word)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode_word_count))
    )
    return wallaroo.build_application("word_count", pipeline)


class WordTotal:
    """How often one word has been seen (one instance per word)."""

    def __init__(self):
        self.count = 0


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode_line(payload):
    return payload.decode("utf-8")


@wallaroo.computation_multi(name="split into words")
def split(line):
    words = []
    for token in line.lower().split():
        word = token.strip(PUNCTUATION)
        if word:
            words.append(word)
    return words


@wallaroo.key_extractor
def extract_word(word):
    return word


@wallaroo.state_computation(name="count word", state=WordTotal)
def count_word(word, state):
    state.count += 1
    return (word, state.count)


@wallaroo.encoder
def encode_word_count(word_count):
    word, count = word_count
    line = f"{word} => {count}\n".encode()
    return struct.pack(">I", len(line)) + line


if __name__ == "__main__":
    wallaroo.run(__file__)
