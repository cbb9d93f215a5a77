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
    hours,
    key_extractor,
    microseconds,
    milliseconds,
    minutes,
    nanoseconds,
    seconds,
    source,
    state_computation,
    state_computation_multi,
    tcp_parse_input_addrs,
    tcp_parse_output_addrs,
)
from actorflow.errors import ActorflowError, ApplicationError, ClusterError, ConfigError
from actorflow.windowing import Aggregation, count_windows, range_windows, session_windows

# The worker's command line as the app sees it (Wallaroo's ``wallaroo._ARGS``): set by
# the loader before ``application_setup(args)`` runs, in every process of the cluster.
_ARGS: tuple[str, ...] = ()

__all__ = [
    "ActorflowError",
    "Aggregation",
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
    "count_windows",
    "decoder",
    "encoder",
    "hours",
    "key_extractor",
    "microseconds",
    "milliseconds",
    "minutes",
    "nanoseconds",
    "range_windows",
    "run",
    "seconds",
    "session_windows",
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


def __getattr__(name: str) -> object:
    """``wallaroo.experimental`` without its own import line (loaded on first use)."""
    if name == "experimental":
        import importlib

        return importlib.import_module("actorflow.experimental")
    raise AttributeError(f"module 'actorflow' has no attribute {name!r}")
