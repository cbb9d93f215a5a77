"""Redis subscriber source: every message published on ``--NAME-topic`` goes to the app.

Pub/sub keeps nothing, so this connector holds each message until a completed
checkpoint covers it (the library does): a worker crash loses nothing.
Params: ``topic``; optional ``host``, ``port``, ``password``.

With hiredis installed (the ``connectors`` extra) it reads the subscription straight
from the socket with hiredis's parser, about twice as fast as redis-py's ``listen``.
"""

from __future__ import annotations

import socket

from actorflow.connectors.common import main
from actorflow.experimental import SourceConnector


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def run() -> None:
    connector = SourceConnector(
        required_params=["topic"], optional_params=["host", "port", "password"]
    )
    connector.connect()
    params = connector.params
    host, port = params.host or "127.0.0.1", int(params.port or 6379)
    try:
        import hiredis
    except ImportError:
        hiredis = None
    if hiredis is None:
        import redis

        pubsub = redis.Redis(host, port, password=params.password).pubsub()
        pubsub.subscribe(params.topic)
        print(f"redis source: subscribed to {params.topic}", flush=True)
        for message in pubsub.listen():
            if message["type"] == "message":
                connector.write(message["data"])
        return
    sock = socket.create_connection((host, port))
    reader = hiredis.Reader()
    if params.password:
        sock.sendall(_command(b"AUTH", params.password.encode()))
    sock.sendall(_command(b"SUBSCRIBE", params.topic.encode()))
    print(f"redis source: subscribed to {params.topic}", flush=True)
    write = connector.write
    while data := sock.recv(1 << 18):
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, list) and reply[0] == b"message":
                write(reply[2])
            elif isinstance(reply, hiredis.ReplyError):
                raise SystemExit(f"redis source: {reply}")
    raise SystemExit("redis source: the server closed the connection")


if __name__ == "__main__":
    main(run)
