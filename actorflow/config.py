"""The worker's flags: Wallaroo's names and short forms, from the command line,
a config file (``-c FILE``) or ``ACTORFLOW_*`` environment variables.

The command line wins over the environment, which wins over the config file.
Arguments the worker does not know pass through to ``application_setup(args)``;
the app also sees the worker's own flags (``--in``, ``--out``, ...) in their
canonical long form, whatever way they were given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import configargparse

from actorflow.api import parse_input_addr
from actorflow.errors import ApplicationError, ConfigError
from actorflow.loader import app_reference
from actorflow.plan import Settings

# Flags forwarded to the app, in their canonical form: (attribute, flag).
_APP_FLAGS = (
    ("inputs", "--in"),
    ("out", "--out"),
    ("metrics", "--metrics"),
    ("control", "--control"),
    ("join", "--join"),
    ("data", "--data"),
    ("my_control", "--my-control"),
    ("my_data", "--my-data"),
    ("external", "--external"),
    ("worker_count", "--worker-count"),
    ("worker_name", "--worker-name"),
    ("resilience_dir", "--resilience-dir"),
)


def host_port(text: str, flag: str) -> tuple[str, int]:
    """Parse ``host:port``; ConfigError naming the flag otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        msg = f"{flag} {text!r}: expected host:port"
        raise ConfigError(msg)
    return host, int(port)


def worker_parser(
    prog: str = "actorflow worker", with_app: bool = True
) -> configargparse.ArgParser:
    p = configargparse.ArgParser(
        prog=prog,
        auto_env_var_prefix="ACTORFLOW_",
        allow_abbrev=False,  # an app's --batch must not be taken for --batch-size
        description="Run one actorflow worker. Unknown arguments pass to the app.",
        formatter_class=configargparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-c", "--config", is_config_file=True, help="config file (key = value lines)")
    if with_app:
        p.add_argument(
            "--app",
            required=True,
            help="the app: a .py file's path, or a module's dotted name (actorflow.examples."
            "alphabet, mypkg.myapp) importable from sys.path or the current directory",
        )
    p.add_argument("-i", "--in", dest="inputs", help="source addresses: name@host:port,...")
    p.add_argument("-o", "--out", help="sink address(es): host:port,...")
    p.add_argument("-m", "--metrics", help="metrics hub address host:port (actorflow metrics)")
    p.add_argument("--control", help="initializer: listen here; others: join here")
    p.add_argument(
        "-j",
        "--join",
        help="join a RUNNING cluster at its initializer's control address host:port: the "
        "cluster grows by this worker (--worker-count: the size after the grow)",
    )
    p.add_argument("-d", "--data", help="data channel host:port; actors advertise its host")
    p.add_argument("-x", "--my-control", help="a non-initializer's own control address")
    p.add_argument("-y", "--my-data", help="a non-initializer's own data address")
    p.add_argument("-e", "--external", help="external channel address (not implemented yet)")
    p.add_argument("-w", "--worker-count", type=int, default=1, help="workers in the cluster")
    p.add_argument(
        "-t",
        "--topology-initializer",
        "--cluster-initializer",
        dest="initializer",
        action="store_true",
        help="this worker is the initializer",
    )
    p.add_argument("-n", "--worker-name", "--name", dest="worker_name", default="initializer")
    p.add_argument("-r", "--resilience-dir", default="/tmp", help="topology and recovery files")
    p.add_argument("--batch-size", type=int, default=Settings.batch_size, help="records per batch")
    p.add_argument("--window", type=int, default=Settings.window, help="batches in flight per link")
    p.add_argument("--partitions", type=int, default=Settings.partitions, help="per state step")
    p.add_argument(
        "--state-actors",
        type=int,
        default=Settings.state_actors,
        help="actors per worker for each partitioned state step, each with its share of "
        "the worker's partitions (more cores for one step; fixed for the cluster's life)",
    )
    p.add_argument(
        "--max-frame-size", type=int, default=Settings.max_frame_size, help="bytes per input frame"
    )
    p.add_argument(
        "--sink-buffer",
        type=int,
        default=Settings.sink_buffer,
        help="bytes a sink holds while its receiver is slow or away",
    )
    p.add_argument(
        "--join-timeout",
        type=float,
        default=30.0,
        help="seconds a joining worker waits for the initializer's control channel",
    )
    p.add_argument(
        "--time-between-checkpoints",
        type=float,
        default=Settings.checkpoint_every,
        help="seconds between checkpoints of the state (0: no checkpoints)",
    )
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds to start up")
    p.add_argument(
        "--cluster-secret-file",
        help="the cluster's shared secret (default: $ACTORFLOW_CLUSTER_SECRET, else "
        "actorflow.secret in --resilience-dir, which the initializer creates)",
    )
    p.add_argument(
        "--no-cluster-auth",
        dest="cluster_auth",
        action="store_false",
        help="do not authenticate cluster traffic (benchmarks only: then anyone who reaches "
        "a worker's port can run code in it)",
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    return p


@dataclass(frozen=True)
class WorkerConfig:
    """A worker's resolved configuration."""

    app: str
    name: str
    control: tuple[str, int]
    initializer: bool
    worker_count: int
    inputs: str | None
    out: str | None
    metrics: str | None
    data: tuple[str, int] | None
    my_control: tuple[str, int] | None
    my_data: tuple[str, int] | None
    join_timeout: float
    resilience_dir: str
    settings: Settings
    ready_timeout: float
    log_level: str
    app_args: tuple[str, ...]
    cluster_secret_file: str | None = None
    cluster_auth: bool = True
    grow: bool = False  # --join: this worker grows a running cluster


def parse_worker_args(argv: Sequence[str], app: str | None = None) -> WorkerConfig:
    """Parse and check a worker's flags (``app`` given when the app module is the program)."""
    parser = worker_parser(with_app=app is None)
    ns, extra = parser.parse_known_args(list(argv))
    app = app or ns.app
    if ns.join and ns.control:
        msg = "--join and --control both name the initializer's control address: give one"
        raise ConfigError(msg)
    if ns.join and ns.initializer:
        msg = "--join adds a worker to a running cluster; the initializer forms one (--control)"
        raise ConfigError(msg)
    if ns.join and ns.worker_count < 2:
        msg = "--join: --worker-count gives the cluster's size after this worker joins (2 or more)"
        raise ConfigError(msg)
    if not ns.control and not ns.join:
        raise ConfigError("--control host:port is required (the initializer's control channel)")
    control = host_port(ns.join or ns.control, "--join" if ns.join else "--control")
    data = host_port(ns.data, "--data") if ns.data else None
    if ns.worker_count < 1:
        raise ConfigError(f"--worker-count must be 1 or more; got {ns.worker_count}")
    initializer = ns.initializer or (ns.worker_count == 1 and not ns.join)
    if not initializer and ns.worker_name == "initializer":
        msg = "a worker that is not the initializer needs its own --worker-name"
        raise ConfigError(msg)
    my_control = host_port(ns.my_control, "--my-control") if ns.my_control else None
    my_data = host_port(ns.my_data, "--my-data") if ns.my_data else None
    if initializer and (my_control or my_data):
        msg = "--my-control and --my-data are for workers that join; the initializer uses --control"
        raise ConfigError(msg)
    if ns.time_between_checkpoints < 0:
        msg = f"--time-between-checkpoints must be 0 or more; got {ns.time_between_checkpoints}"
        raise ConfigError(msg)
    if ns.join_timeout <= 0:
        raise ConfigError(f"--join-timeout must be positive; got {ns.join_timeout}")
    if ns.inputs:
        for entry in ns.inputs.split(","):
            try:
                parse_input_addr(entry)
            except ApplicationError as exc:
                raise ConfigError(str(exc)) from None
    if ns.out:
        for entry in ns.out.split(","):
            host_port(entry, "--out")
    if ns.metrics:
        host_port(ns.metrics, "--metrics")
    if ns.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"--log-level {ns.log_level!r}: expected DEBUG, INFO, WARNING or ERROR")
    for flag, value in (
        ("--batch-size", ns.batch_size),
        ("--window", ns.window),
        ("--partitions", ns.partitions),
        ("--state-actors", ns.state_actors),
        ("--max-frame-size", ns.max_frame_size),
        ("--sink-buffer", ns.sink_buffer),
    ):
        if value < 1:
            raise ConfigError(f"{flag} must be 1 or more; got {value}")
    settings = Settings(
        batch_size=ns.batch_size,
        window=ns.window,
        partitions=ns.partitions,
        state_actors=ns.state_actors,
        max_frame_size=ns.max_frame_size,
        sink_buffer=ns.sink_buffer,
        checkpoint_every=ns.time_between_checkpoints,
    )
    app_args: list[str] = []
    for attr, flag in _APP_FLAGS:
        value = getattr(ns, attr)
        if value is not None:
            app_args += [flag, str(value)]
    if initializer:
        app_args.append("--topology-initializer")
    app_args += extra
    return WorkerConfig(
        app=app_reference(app),
        name=ns.worker_name,
        control=control,
        initializer=initializer,
        worker_count=ns.worker_count,
        inputs=ns.inputs,
        out=ns.out,
        metrics=ns.metrics,
        data=data,
        my_control=my_control,
        my_data=my_data,
        join_timeout=ns.join_timeout,
        resilience_dir=ns.resilience_dir,
        settings=settings,
        ready_timeout=ns.ready_timeout,
        log_level=ns.log_level.upper(),
        app_args=tuple(app_args),
        cluster_secret_file=ns.cluster_secret_file,
        cluster_auth=ns.cluster_auth,
        grow=bool(ns.join),
    )
