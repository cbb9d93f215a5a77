"""Unit tests of the worker's flags: actorflow.config.parse_worker_args.

Flags come from the command line, ``ACTORFLOW_*`` environment variables and a
config file (``-c FILE``), in that order of precedence. Unknown arguments pass
through to the app, which also sees the worker's own flags in canonical form.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from actorflow.config import WorkerConfig, host_port, parse_worker_args
from actorflow.errors import ConfigError
from actorflow.plan import Settings

REPO = Path(__file__).resolve().parents[1]
APP = "apps/alphabet.py"

DESIGN_FLAGS = [
    "--in",
    "127.0.0.1:7010",
    "--out",
    "127.0.0.1:7002",
    "--metrics",
    "127.0.0.1:5001",
    "--control",
    "127.0.0.1:12500",
    "--data",
    "127.0.0.1:12501",
    "--topology-initializer",
    "--worker-count",
    "1",
    "--worker-name",
    "worker1",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ACTORFLOW_* variable from the outside leaks into a test."""
    for name in list(os.environ):
        if name.startswith("ACTORFLOW_"):
            monkeypatch.delenv(name)


def parse(*argv: str) -> WorkerConfig:
    return parse_worker_args(list(argv), app=APP)


def pairs(args: tuple[str, ...]) -> dict[str, str]:
    """The ``--flag value`` pairs of app args (flags without a value map to "")."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("-"):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            out[args[i]] = ""
            i += 1
    return out


# -- the design document's flags ----------------------------------------------------------


def test_design_document_flags() -> None:
    cfg = parse(*DESIGN_FLAGS)
    assert cfg.app == os.path.abspath(APP)
    assert cfg.name == "worker1"
    assert cfg.control == ("127.0.0.1", 12500)
    assert cfg.data == ("127.0.0.1", 12501)
    assert cfg.initializer is True
    assert cfg.worker_count == 1
    assert cfg.inputs == "127.0.0.1:7010"
    assert cfg.out == "127.0.0.1:7002"
    assert cfg.metrics == "127.0.0.1:5001"
    assert cfg.resilience_dir == "/tmp"
    assert cfg.settings == Settings()
    assert cfg.log_level == "INFO"
    assert cfg.ready_timeout == 60.0


def test_design_document_flags_reach_the_app_in_canonical_form() -> None:
    cfg = parse(*DESIGN_FLAGS)
    assert cfg.app_args == (
        "--in",
        "127.0.0.1:7010",
        "--out",
        "127.0.0.1:7002",
        "--metrics",
        "127.0.0.1:5001",
        "--control",
        "127.0.0.1:12500",
        "--data",
        "127.0.0.1:12501",
        "--worker-count",
        "1",
        "--worker-name",
        "worker1",
        "--resilience-dir",
        "/tmp",
        "--topology-initializer",
    )


def test_wallaroo_short_forms_and_aliases() -> None:
    cfg = parse(
        "-i",
        "votes@127.0.0.1:7010",
        "-o",
        "127.0.0.1:7002",
        "-m",
        "127.0.0.1:5001",
        "--control",
        "127.0.0.1:12500",
        "-d",
        "127.0.0.1:12501",
        "-t",
        "-w",
        "1",
        "-n",
        "w1",
        "-r",
        "/var/tmp",
    )
    assert (cfg.inputs, cfg.out, cfg.metrics) == (
        "votes@127.0.0.1:7010",
        "127.0.0.1:7002",
        "127.0.0.1:5001",
    )
    assert (cfg.data, cfg.initializer, cfg.worker_count, cfg.name, cfg.resilience_dir) == (
        ("127.0.0.1", 12501),
        True,
        1,
        "w1",
        "/var/tmp",
    )
    args = pairs(cfg.app_args)
    assert args["--in"] == "votes@127.0.0.1:7010"
    assert args["--out"] == "127.0.0.1:7002"
    assert args["--worker-name"] == "w1"
    assert args["--resilience-dir"] == "/var/tmp"
    assert "-i" not in args and "-n" not in args


def test_long_aliases() -> None:
    cfg = parse("--control", "127.0.0.1:1", "--cluster-initializer", "--name", "seed")
    assert cfg.initializer and cfg.name == "seed"
    assert pairs(cfg.app_args)["--worker-name"] == "seed"
    assert "--topology-initializer" in cfg.app_args


def test_equals_form() -> None:
    cfg = parse("--control=127.0.0.1:9", "--in=a@127.0.0.1:7", "--batch-size=5")
    assert cfg.control == ("127.0.0.1", 9) and cfg.inputs == "a@127.0.0.1:7"
    assert cfg.settings.batch_size == 5


def test_defaults_with_only_control() -> None:
    cfg = parse("--control", "localhost:12500")
    assert cfg.control == ("localhost", 12500)
    assert (cfg.name, cfg.initializer, cfg.worker_count) == ("initializer", True, 1)
    assert (cfg.inputs, cfg.out, cfg.metrics, cfg.data) == (None, None, None, None)
    assert "--in" not in cfg.app_args and "--out" not in cfg.app_args


def test_runtime_settings() -> None:
    cfg = parse(
        "--control",
        "127.0.0.1:1",
        "--batch-size",
        "64",
        "--window",
        "2",
        "--partitions",
        "12",
        "--max-frame-size",
        "4096",
        "--ready-timeout",
        "2.5",
        "--log-level",
        "debug",
    )
    assert cfg.settings == Settings(batch_size=64, window=2, partitions=12, max_frame_size=4096)
    assert cfg.ready_timeout == 2.5 and cfg.log_level == "DEBUG"


def test_app_module_from_app_flag() -> None:
    cfg = parse_worker_args(["--app", "apps/word_count.py", "--control", "127.0.0.1:1"])
    assert cfg.app == os.path.abspath("apps/word_count.py")


# -- config file and environment ----------------------------------------------------------


def write_conf(tmp_path: Path, text: str) -> str:
    path = tmp_path / "worker.conf"
    path.write_text(text)
    return str(path)


def test_config_file(tmp_path: Path) -> None:
    conf = write_conf(
        tmp_path,
        "# a comment\n"
        "in = my source@127.0.0.1:7010\n"
        "out = 127.0.0.1:7002\n"
        "control = 127.0.0.1:12500\n"
        "data = 127.0.0.1:12501\n"
        "topology-initializer = true\n"
        "worker-count = 1\n"
        "worker-name = from-file\n"
        "batch-size = 17\n",
    )
    cfg = parse("-c", conf)
    assert cfg.inputs == "my source@127.0.0.1:7010"
    assert cfg.control == ("127.0.0.1", 12500) and cfg.data == ("127.0.0.1", 12501)
    assert cfg.name == "from-file" and cfg.initializer
    assert cfg.settings.batch_size == 17
    assert pairs(cfg.app_args)["--worker-name"] == "from-file"
    assert cfg.app_args[:2] == ("--in", "my source@127.0.0.1:7010")


@pytest.mark.parametrize(
    ("conf", "expected"),
    [
        ("alphabet", ("alphabet@127.0.0.1:7010", "127.0.0.1:7002", 12500, 12501)),
        ("word_count", ("word count@127.0.0.1:7020", "127.0.0.1:7003", 12510, 12511)),
        (
            "vote_merge",
            ("east@127.0.0.1:7030,west@127.0.0.1:7031", "127.0.0.1:7004", 12520, 12521),
        ),
    ],
)
def test_shipped_config_files(conf: str, expected: tuple[str, str, int, int]) -> None:
    path = REPO / "conf" / f"{conf}.conf"
    cfg = parse_worker_args(["-c", str(path)], app=str(REPO / "apps" / f"{conf}.py"))
    assert (cfg.inputs, cfg.out, cfg.control[1], cfg.data[1] if cfg.data else None) == expected
    assert (cfg.name, cfg.worker_count, cfg.initializer) == ("worker1", 1, True)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTORFLOW_CONTROL", "127.0.0.1:12600")
    monkeypatch.setenv("ACTORFLOW_IN", "env@127.0.0.1:7100")
    monkeypatch.setenv("ACTORFLOW_WORKER_NAME", "from-env")
    monkeypatch.setenv("ACTORFLOW_BATCH_SIZE", "33")
    monkeypatch.setenv("ACTORFLOW_LOG_LEVEL", "warning")
    cfg = parse()
    assert cfg.control == ("127.0.0.1", 12600)
    assert cfg.inputs == "env@127.0.0.1:7100"
    assert cfg.name == "from-env"
    assert cfg.settings.batch_size == 33
    assert cfg.log_level == "WARNING"
    assert pairs(cfg.app_args)["--in"] == "env@127.0.0.1:7100"


def test_precedence_command_line_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = write_conf(
        tmp_path,
        "control = 127.0.0.1:1\nworker-name = file\nbatch-size = 1\nwindow = 1\npartitions = 1\n",
    )
    monkeypatch.setenv("ACTORFLOW_WORKER_NAME", "env")
    monkeypatch.setenv("ACTORFLOW_BATCH_SIZE", "2")
    monkeypatch.setenv("ACTORFLOW_WINDOW", "2")
    cfg = parse("-c", conf, "--name", "cli", "--batch-size", "3")
    assert cfg.name == "cli"  # command line over env and file
    assert cfg.settings.batch_size == 3  # command line over env and file
    assert cfg.settings.window == 2  # env over file
    assert cfg.settings.partitions == 1  # file over default
    assert cfg.control == ("127.0.0.1", 1)
    cfg = parse("-c", conf)
    assert cfg.name == "env"
    monkeypatch.delenv("ACTORFLOW_WORKER_NAME")
    assert parse("-c", conf).name == "file"


# -- pass-through to the app --------------------------------------------------------------


def test_unknown_arguments_pass_through() -> None:
    cfg = parse(
        "--depth", "3", "-i", "a@127.0.0.1:7", "--control", "127.0.0.1:1", "--verbose", "extra"
    )
    assert cfg.app_args == (
        "--in",
        "a@127.0.0.1:7",
        "--control",
        "127.0.0.1:1",
        "--worker-count",
        "1",
        "--worker-name",
        "initializer",
        "--resilience-dir",
        "/tmp",
        "--topology-initializer",
        "--depth",
        "3",
        "--verbose",
        "extra",
    )


def test_worker_only_flags_do_not_reach_the_app() -> None:
    cfg = parse("--control", "127.0.0.1:1", "--batch-size", "9", "--log-level", "ERROR")
    assert "--batch-size" not in cfg.app_args and "--log-level" not in cfg.app_args
    assert "9" not in cfg.app_args


def test_app_flags_that_prefix_worker_flags_pass_through() -> None:
    cfg = parse("--control", "127.0.0.1:1", "--batch", "10")
    assert cfg.settings.batch_size == Settings.batch_size
    assert cfg.app_args[-2:] == ("--batch", "10")


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--in", "127.0.0.1:7010"], "--control"),
        (["--control", "localhost"], "--control"),
        (["--control", "127.0.0.1:port"], "--control"),
        (["--control", ":12500"], "--control"),
        (["--control", "127.0.0.1:70000"], "--control"),
        (["--control", "127.0.0.1:1", "--data", "nohost"], "--data"),
        (["--control", "127.0.0.1:1", "--out", "127.0.0.1:1,bad"], "--out"),
        (["--control", "127.0.0.1:1", "--in", "a@127.0.0.1"], "--in"),
        (["--control", "127.0.0.1:1", "--worker-count", "0"], "--worker-count"),
        (["--control", "127.0.0.1:1", "--worker-count", "-3"], "--worker-count"),
        (["--control", "127.0.0.1:1", "--log-level", "LOUD"], "--log-level"),
        (["--control", "127.0.0.1:1", "--batch-size", "0"], "--batch-size"),
        (["--control", "127.0.0.1:1", "--window", "0"], "--window"),
        (["--control", "127.0.0.1:1", "--partitions", "0"], "--partitions"),
        (["--control", "127.0.0.1:1", "--max-frame-size", "-1"], "--max-frame-size"),
    ],
)
def test_errors_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError, match=flag):
        parse(*argv)


def test_multi_worker_flags() -> None:
    init = parse("--control", "127.0.0.1:1", "--worker-count", "2", "--topology-initializer")
    assert (init.initializer, init.worker_count, init.my_control) == (True, 2, None)
    joiner = parse(
        "--control",
        "127.0.0.1:1",
        "-w",
        "3",
        "-n",
        "w2",
        "-x",
        "127.0.0.1:7",
        "-y",
        "127.0.0.1:8",
        "--join-timeout",
        "5",
    )
    assert not joiner.initializer and joiner.worker_count == 3
    assert (joiner.my_control, joiner.my_data, joiner.join_timeout) == (
        ("127.0.0.1", 7),
        ("127.0.0.1", 8),
        5.0,
    )
    assert "--my-control" in joiner.app_args and "--topology-initializer" not in joiner.app_args


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-w", "2"], "needs its own --worker-name"),
        (["-w", "2", "-t", "-x", "127.0.0.1:7"], "--my-control and --my-data are for workers"),
        (["-w", "2", "-n", "w2", "-x", "nohost"], "--my-control 'nohost'"),
        (["-w", "2", "-n", "w2", "--join-timeout", "0"], "--join-timeout"),
    ],
)
def test_multi_worker_flag_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse("--control", "127.0.0.1:1", *argv)


def test_host_port() -> None:
    assert host_port("127.0.0.1:0", "--x") == ("127.0.0.1", 0)
    assert host_port(" example.org:65535 ", "--x") == ("example.org", 65535)
    with pytest.raises(ConfigError, match="--x 'h:65536'"):
        host_port("h:65536", "--x")


def test_join_grows_a_running_cluster() -> None:
    cfg = parse_worker_args(
        ["--app", "a.py", "-j", "10.0.0.1:12500", "-w", "3", "-n", "w3", "--in", "in@h:1"]
    )
    assert cfg.grow and not cfg.initializer and cfg.control == ("10.0.0.1", 12500)
    assert cfg.worker_count == 3 and "--join" in cfg.app_args


@pytest.mark.parametrize(
    "argv, why",
    [
        (["--join", "h:1", "--control", "h:1", "-w", "3", "-n", "w3"], "give one"),
        (["--join", "h:1", "-t", "-w", "3"], "the initializer forms one"),
        (["--join", "h:1", "-n", "w3"], "size after this worker joins"),
        (["--join", "nowhere", "-w", "3", "-n", "w3"], "--join 'nowhere': expected host:port"),
    ],
)
def test_join_flags_that_cannot_work_are_refused(argv: list[str], why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        parse_worker_args(["--app", "a.py", *argv])
