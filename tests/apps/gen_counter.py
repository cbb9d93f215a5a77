"""A generator source (``GenSourceConfig``) counting 1..N, summed per residue class.

The source makes the numbers 1, 2, ..., N (``--count N``, default 5000) and ends;
``key_by`` puts each number under its residue ``n % 7``; the state keeps, per key, the
running sum. Output: the framed line ``"<key> => <sum>\\n"`` per number.
"""

import struct

import actorflow as wallaroo

MODULUS = 7


def count_arg(args):
    for i, a in enumerate(args):
        if a == "--count":
            return int(args[i + 1])
    return 5000


class Counter:
    """Generates 1..limit, then ends (``apply`` returns None)."""

    def __init__(self, limit):
        self.limit = limit

    def initial_value(self):
        return 1

    def apply(self, value):
        return value + 1 if value < self.limit else None


class Sum:
    def __init__(self):
        self.total = 0


@wallaroo.key_extractor
def residue(n):
    return str(n % MODULUS)


@wallaroo.state_computation(name="sum per residue", state=Sum)
def add(n, state):
    state.total += n
    return (str(n % MODULUS), state.total)


@wallaroo.encoder
def encode(key_total):
    line = f"{key_total[0]} => {key_total[1]}\n".encode()
    return struct.pack(">I", len(line)) + line


def application_setup(args):
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    numbers = wallaroo.source(
        "numbers", wallaroo.GenSourceConfig("numbers", Counter(count_arg(args)))
    )
    pipeline = (
        numbers.key_by(residue).to(add).to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("gen_counter", pipeline)
