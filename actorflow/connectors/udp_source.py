"""UDP source: every datagram received on ``--NAME-host``/``--NAME-port`` is a message.
UDP itself may drop datagrams; from here on nothing is lost (the library holds each
message until a checkpoint covers it)."""

from __future__ import annotations

import socket

from actorflow.connectors.common import main
from actorflow.experimental import SourceConnector


def run() -> None:
    connector = SourceConnector(required_params=["host", "port"])
    connector.connect()
    params = connector.params
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((params.host, int(params.port)))
    print(f"udp source: listening on {params.host}:{params.port}", flush=True)
    while True:
        data = sock.recv(65536)
        connector.write(data.strip())


if __name__ == "__main__":
    main(run)
