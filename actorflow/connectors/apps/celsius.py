"""Wallaroo's celsius_connectors example, its import lines changed: Celsius readings
(big-endian floats) from a connector source, Fahrenheit out to a sink connector."""

import struct

import actorflow as wallaroo
import actorflow.experimental


def application_setup(args):
    in_host, in_port = wallaroo.tcp_parse_input_addrs(args)[0][1:]
    out_host, out_port = wallaroo.tcp_parse_output_addrs(args)[0]
    source_config = wallaroo.experimental.SourceConnectorConfig(
        "celsius_feed",
        encoder=encode_feed,
        decoder=decode_feed,
        host=in_host,
        port=in_port,
        cookie="Dragons-Love-Tacos",
        max_credits=10,
        refill_credits=8,
    )
    sink_config = wallaroo.experimental.SinkConnectorConfig(
        "fahrenheit_conversion",
        encoder=encode_conversion,
        decoder=decode_conversion,
        host=out_host,
        port=out_port,
        cookie="Dragons-Love-Tacos",
    )
    pipeline = (
        wallaroo.source("convert temperature readings", source_config)
        .to(multiply)
        .to(add)
        .to_sink(sink_config)
    )
    return wallaroo.build_application("Celsius to Fahrenheit", pipeline)


@wallaroo.computation(name="multiply by 1.8")
def multiply(data):
    return data * 1.8


@wallaroo.computation(name="add 32")
def add(data):
    return data + 32


@wallaroo.experimental.stream_message_encoder
def encode_feed(data):
    return data


@wallaroo.experimental.stream_message_decoder
def decode_feed(data):
    return struct.unpack(">f", data)[0]


@wallaroo.experimental.stream_message_encoder
def encode_conversion(data):
    return f"{data}\n".encode()


@wallaroo.experimental.stream_message_decoder
def decode_conversion(data):
    return data.decode("utf-8")
