"""UDP sink: sends each output (the app's encoded bytes) as one datagram to
``--NAME-host``/``--NAME-port``, once its checkpoint has completed (at least once: a
restarted script may send a checkpoint's outputs again)."""

from __future__ import annotations

import socket

from actorflow.connectors.common import main
from actorflow.experimental import SinkConnector


def run() -> None:
    connector = SinkConnector(required_params=["host", "port"])
    params = connector.params
    target = (params.host, int(params.port))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    connector.listen()
    print(f"udp sink: listening for {params.connector_name}", flush=True)
    while True:
        data = connector.read()
        sock.sendto(data if isinstance(data, bytes) else str(data).encode(), target)


if __name__ == "__main__":
    main(run)
