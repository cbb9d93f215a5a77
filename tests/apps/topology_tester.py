"""Topology tester, in the spirit of Wallaroo's: a chain of steps named by ``--steps``.

``--steps s,kS,S``: ``s`` is a stateless step, ``S`` a state step, a leading
``k`` puts ``key_by`` before the step. Each input frame is a key (text); each
output is the framed line ``"<key>|<step> <step> ...\\n"`` naming the steps the
record passed, in order; a state step writes ``S<i>#<n>``, n being how many
records its state instance has seen (one instance per key once a key_by came
before it, else one for all).
"""

import struct

import actorflow as wallaroo


def steps_arg(args):
    for i, a in enumerate(args):
        if a == "--steps":
            return args[i + 1].split(",")
        if a.startswith("--steps="):
            return a.split("=", 1)[1].split(",")
    raise wallaroo.ApplicationError("topology_tester needs --steps, e.g. --steps s,kS")


class Seen:
    def __init__(self):
        self.n = 0


def stateless(name):
    return wallaroo.computation(name)(lambda rec: (rec[0], rec[1] + (name,)))


def stateful(name):
    def count(rec, seen):
        seen.n += 1
        return (rec[0], rec[1] + (f"{name}#{seen.n}",))

    return wallaroo.state_computation(name, Seen)(count)


@wallaroo.key_extractor
def record_key(rec):
    return rec[0]


@wallaroo.decoder(header_length=4, length_fmt=">I")
def decode(payload):
    return (payload.decode(), ())


@wallaroo.encoder
def encode(rec):
    line = f"{rec[0]}|{' '.join(rec[1])}\n".encode()
    return struct.pack(">I", len(line)) + line


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    p = wallaroo.source(name, wallaroo.TCPSourceConfig(name, host, port, decode))
    for i, step in enumerate(steps_arg(args), 1):
        if step.startswith("k"):
            p = p.key_by(record_key)
            step = step[1:]
        p = p.to(stateless(f"s{i}") if step == "s" else stateful(f"S{i}"))
    return wallaroo.build_application(
        "topology_tester", p.to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )


if __name__ == "__main__":
    wallaroo.run(__file__)
