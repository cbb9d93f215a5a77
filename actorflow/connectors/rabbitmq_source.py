"""RabbitMQ queue source: consumes ``--NAME-queue`` and acknowledges each delivery to
RabbitMQ only once a completed checkpoint covers it, so a crash of the worker or of
this script loses nothing (RabbitMQ redelivers what was not acknowledged).
Params: ``amqpurl`` (e.g. amqp://guest:guest@127.0.0.1:5672/%2F), ``queue``;
optional ``prefetch`` (unacknowledged deliveries allowed, default 20000).
"""

from __future__ import annotations

import threading

from actorflow.connectors.common import PendingAcks, main
from actorflow.experimental import SourceConnector


def run() -> None:
    import pika

    connector = SourceConnector(required_params=["amqpurl", "queue"], optional_params=["prefetch"])
    connector.connect()
    params = connector.params
    connection = pika.BlockingConnection(pika.URLParameters(params.amqpurl))
    channel = connection.channel()
    channel.queue_declare(queue=params.queue, durable=True)
    channel.basic_qos(prefetch_count=int(params.prefetch or 20000))
    pending = PendingAcks()
    lock = threading.Lock()

    def ack_upstream(tag: int) -> None:
        channel.basic_ack(delivery_tag=tag, multiple=True)

    def acked(point: int) -> None:  # the connector's thread: hand it to pika's
        with lock:
            tags = pending.acked(point)
        if tags:
            connection.add_callback_threadsafe(lambda: ack_upstream(tags[-1]))

    connector.on_acked = acked

    def on_message(ch, deliver, properties, body) -> None:
        with lock:  # before the write: its ack may come at once
            pending.add(connector.last_id + 1, deliver.delivery_tag)
        connector.write(body)

    channel.basic_consume(queue=params.queue, on_message_callback=on_message)
    print(f"rabbitmq source: consuming {params.queue}", flush=True)
    channel.start_consuming()


if __name__ == "__main__":
    main(run)
