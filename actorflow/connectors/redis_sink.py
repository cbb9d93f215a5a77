"""Redis hash sink: each output sets a field of the hash ``--NAME-hash``. An output is
a ``(field, value)`` pair or a dict with ``field-key`` / ``value-key`` entries (default
the first two values). Each checkpoint's outputs and its entry in the hash
``actorflow:commits`` are written in one MULTI/EXEC transaction: exactly once.
Params: ``hash``; optional ``host``, ``port``, ``password``, ``field-key``,
``value-key``.
"""

from __future__ import annotations

from actorflow.connectors.common import main
from actorflow.experimental import SinkConnector

LOG = "actorflow:commits"


def run() -> None:
    import redis

    connector = SinkConnector(
        required_params=["hash"],
        optional_params=["host", "port", "password", "field_key", "value_key"],
    )
    params = connector.params
    client = redis.Redis(
        params.host or "127.0.0.1", int(params.port or 6379), password=params.password
    )

    def pair(out):
        if isinstance(out, dict):
            values = list(out.values())
            field = out[params.field_key] if params.field_key else values[0]
            value = out[params.value_key] if params.value_key else values[1]
            return field, value
        return out[0], out[1]

    def committed(sink: str) -> int:
        return int(client.hget(LOG, sink) or 0)

    def commit(sink: str, checkpoint: int, outputs: list) -> None:
        pipe = client.pipeline(transaction=True)
        for out in outputs:
            field, value = pair(out)
            pipe.hset(params.hash, field, value)
        pipe.hset(LOG, sink, checkpoint)
        pipe.execute()

    connector.listen()
    print(f"redis sink: listening for {params.connector_name}", flush=True)
    connector.serve(commit, committed)


if __name__ == "__main__":
    main(run)
