"""actorflow: Wallaroo-style multi-worker stream processing in Python, on Thespian actors.

An app ports from Wallaroo 0.6 by changing its import: ``import actorflow as wallaroo``.
"""

# The one place the version is written: pyproject.toml reads it (dynamic version).
__version__ = "0.1.0"

from actorflow.api import (
    Application,
    GenSourceConfig,
    Pipeline,
    TCPSinkConfig,
    TCPSourceConfig,
    build_application,
    computation,
    computation_multi,
    decoder,
    encoder,
    key_extractor,
    microseconds,
    milliseconds,
    nanoseconds,
    seconds,
    source,
    state_computation,
    state_computation_multi,
    tcp_parse_input_addrs,
    tcp_parse_output_addrs,
)
from actorflow.errors import ActorflowError, ApplicationError, ClusterError, ConfigError

__all__ = [
    "ActorflowError",
    "Application",
    "ApplicationError",
    "ClusterError",
    "ConfigError",
    "GenSourceConfig",
    "Pipeline",
    "TCPSinkConfig",
    "TCPSourceConfig",
    "build_application",
    "computation",
    "computation_multi",
    "decoder",
    "encoder",
    "key_extractor",
    "microseconds",
    "milliseconds",
    "nanoseconds",
    "run",
    "seconds",
    "source",
    "state_computation",
    "state_computation_multi",
    "tcp_parse_input_addrs",
    "tcp_parse_output_addrs",
]


def run(app_file: str) -> None:
    """Run a worker for the app in ``app_file``: ``python apps/alphabet.py [flags]``."""
    import sys

    from actorflow.worker import run_worker

    sys.exit(run_worker(app=app_file))
