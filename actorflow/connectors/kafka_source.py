"""Kafka consumer-group source (untested here: no broker in the tests). Offsets are
committed to Kafka only once a completed checkpoint covers the messages, with the same
helper and client library as the tested RabbitMQ source, so a crash of the worker or of
this script loses nothing. Needs kafka-python (``pip install kafka-python``).
Params: ``topics`` (comma-separated); optional ``bootstrap_brokers`` (default
127.0.0.1:9092), ``consumer_group`` (default actorflow).
"""

from __future__ import annotations

import threading

from actorflow.connectors.common import PendingAcks, latest_per_partition, main
from actorflow.experimental import SourceConnector


def run() -> None:
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

    connector = SourceConnector(
        required_params=["topics"], optional_params=["bootstrap_brokers", "consumer_group"]
    )
    connector.connect()
    params = connector.params
    consumer = KafkaConsumer(
        *params.topics.split(","),
        bootstrap_servers=params.bootstrap_brokers or "127.0.0.1:9092",
        group_id=params.consumer_group or "actorflow",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    pending = PendingAcks()
    lock = threading.Lock()
    to_commit: dict = {}

    def acked(point: int) -> None:  # the connector's thread; the consumer commits below
        with lock:
            to_commit.update(latest_per_partition(pending.acked(point)))

    connector.on_acked = acked
    print(f"kafka source: consuming {params.topics}", flush=True)
    try:
        while True:
            for tp, records in consumer.poll(timeout_ms=100).items():
                for record in records:
                    token = (TopicPartition(tp.topic, tp.partition), record.offset)
                    with lock:
                        pending.add(connector.last_id + 1, token)
                    connector.write(record.value, key=record.key)
            with lock:
                commits, to_commit = dict(to_commit), {}
            if commits:
                consumer.commit({tp: _offset(OffsetAndMetadata, o) for tp, o in commits.items()})
    finally:
        connector.close()


def _offset(cls, offset: int):
    """kafka-python's OffsetAndMetadata: (offset, metadata), from 2.1 with a leader epoch."""
    return cls(offset, "", -1) if len(cls._fields) > 2 else cls(offset, "")


if __name__ == "__main__":
    main(run)
