"""Kafka sink (untested here: no broker in the tests): each checkpoint's outputs are
produced to ``--NAME-topic`` and flushed before the checkpoint is confirmed, through the
same ``serve`` as the tested PostgreSQL and Redis sinks. Kafka keeps no log of ours, so
a restart of this script may produce a checkpoint's outputs again (at least once).
Needs kafka-python. Params: ``topic``; optional ``bootstrap_brokers``.
"""

from __future__ import annotations

from actorflow.connectors.common import main
from actorflow.experimental import SinkConnector


def run() -> None:
    from kafka import KafkaProducer

    connector = SinkConnector(required_params=["topic"], optional_params=["bootstrap_brokers"])
    params = connector.params
    producer = KafkaProducer(bootstrap_servers=params.bootstrap_brokers or "127.0.0.1:9092")

    def commit(sink: str, checkpoint: int, outputs: list) -> None:
        for out in outputs:
            producer.send(params.topic, out if isinstance(out, bytes) else str(out).encode())
        producer.flush()

    connector.listen()
    print(f"kafka sink: listening for {params.connector_name}", flush=True)
    connector.serve(commit, lambda sink: 0)


if __name__ == "__main__":
    main(run)
