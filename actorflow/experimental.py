"""Wallaroo's ``wallaroo.experimental`` names: connector sources and sinks.

A Wallaroo app that imports ``wallaroo.experimental`` runs here with its import lines
changed to ``import actorflow as wallaroo`` and ``import actorflow.experimental``.
The app declares a connector source (or sink) with its encoder and decoder; a
connector script beside the worker (``actorflow/connectors/``) loads the same app to
find them and speaks the protocols of :mod:`actorflow.connectors.protocol`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actorflow.api import (
    DEFAULT_MAX_FRAME,
    Decoder,
    Encoder,
    TCPSinkConfig,
    TCPSourceConfig,
    _port,
    check_arity,
)
from actorflow.connectors.client import SourceConnector, parse_connector_args
from actorflow.connectors.protocol import ProtocolError, output_frame
from actorflow.connectors.sink_client import SinkConnector
from actorflow.errors import ApplicationError

__all__ = [
    "ConnectorError",
    "ProtocolError",
    "SinkConnector",
    "SinkConnectorConfig",
    "SourceConnector",
    "SourceConnectorConfig",
    "octet_message_decoder",
    "octet_message_encoder",
    "parse_connector_args",
    "stream_message_decoder",
    "stream_message_encoder",
]


class ConnectorError(Exception):
    """A connector could not do what it was asked."""


def stream_message_decoder(func: Callable[[bytes], Any]) -> Decoder:
    """Decodes one connector message's payload (no framing) into a record."""
    check_arity("stream_message_decoder", getattr(func, "__name__", "?"), func, 1)
    return Decoder(func)


def stream_message_encoder(func: Callable[[Any], bytes]) -> Encoder:
    """Encodes one record into a connector message's payload."""
    check_arity("stream_message_encoder", getattr(func, "__name__", "?"), func, 1)
    return Encoder(func)


octet_message_decoder = stream_message_decoder
octet_message_encoder = stream_message_encoder


def _positive(value: Any, what: str) -> int:
    if not isinstance(value, int) or value <= 0:
        raise ApplicationError(f"{what} must be a positive number; got {value!r}")
    return value


@dataclass(frozen=True, init=False)
class SourceConnectorConfig(TCPSourceConfig):
    """A source that connector scripts connect to (the at-least-once protocol).

    ``max_credits`` bounds the messages a connector may have in flight; they are
    refilled by ``refill_credits`` or more while the pipeline keeps up.
    """

    encoder: Encoder | None = None
    cookie: str = ""
    max_credits: int = 1000
    refill_credits: int = 500

    def __init__(
        self,
        name: str,
        encoder: Encoder | None,
        decoder: Decoder,
        port: int,
        cookie: str = "",
        max_credits: int = 1000,
        refill_credits: int | None = None,
        host: str = "127.0.0.1",
        max_frame_size: int = DEFAULT_MAX_FRAME,
    ) -> None:
        what = f"SourceConnectorConfig {name!r}"
        if refill_credits is None:  # Wallaroo had no default: half the window
            refill_credits = max(1, max_credits // 2) if isinstance(max_credits, int) else 1
        values = dict(
            name=name,
            host=host,
            port=_port(port, what),
            decoder=decoder,
            parallelism=1,
            max_frame_size=max_frame_size,
            encoder=encoder,
            cookie=str(cookie),
            max_credits=_positive(max_credits, f"{what}: max_credits"),
            refill_credits=_positive(refill_credits, f"{what}: refill_credits"),
        )
        for k, v in values.items():
            object.__setattr__(self, k, v)
        if encoder is not None and not isinstance(encoder, Encoder):
            raise ApplicationError(f"{what}: encoder must be a @stream_message_encoder")
        if refill_credits > max_credits:
            raise ApplicationError(f"{what}: refill_credits is larger than max_credits")
        self.__post_init__()


@dataclass(frozen=True, init=False)
class SinkConnectorConfig(TCPSinkConfig):
    """A sink that connects to a connector script, which commits what checkpoints cover.

    The worker frames each output the app's encoder makes, so the connector's
    ``decoder`` gets the outputs one by one.
    """

    connector: str = ""
    decoder: Decoder | None = None
    cookie: str = ""
    user_encoder: Encoder | None = None

    def __init__(
        self,
        name: str,
        encoder: Encoder,
        decoder: Decoder | None,
        port: int,
        cookie: str = "",
        host: str = "127.0.0.1",
    ) -> None:
        what = f"SinkConnectorConfig {name!r}"
        if not isinstance(encoder, Encoder):
            raise ApplicationError(f"{what}: encoder must be a @stream_message_encoder")
        func = encoder.func

        def framed(data: Any) -> bytes:
            return output_frame(func(data))

        values = dict(
            host=host,
            port=_port(port, what),
            encoder=Encoder(framed),
            connector=name,
            decoder=decoder,
            cookie=str(cookie),
            user_encoder=encoder,
        )
        for k, v in values.items():
            object.__setattr__(self, k, v)
        self.__post_init__()

    @property
    def name(self) -> str:
        return f"connector-sink {self.connector}"
