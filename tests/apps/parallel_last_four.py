"""last_four with its source's parallelism from ``--source-parallelism N``: the router
after the source runs N actors per worker, each source connection going to one."""

from last_four import decode, encode, keep_last_four, key_of

import actorflow as wallaroo


def application_setup(args):
    name, host, port = wallaroo.tcp_parse_input_addrs(args)[0]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    flag = "--source-parallelism"
    parallelism = int(args[args.index(flag) + 1]) if flag in args else 1
    config = wallaroo.TCPSourceConfig(name, host, port, decode, parallelism=parallelism)
    pipeline = (
        wallaroo.source(name, config)
        .key_by(key_of)
        .to(keep_last_four)
        .to_sink(wallaroo.TCPSinkConfig(out_host, out_port, encode))
    )
    return wallaroo.build_application("last_four", pipeline)
