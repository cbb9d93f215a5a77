"""The ``actorflow`` command: a thin layer over the library."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: actorflow COMMAND [ARGS]

commands:
  worker    run a worker:      actorflow worker --app FILE.py|MODULE [-c FILE] [flags]
  examples  the shipped apps:  actorflow examples [--conf NAME]
  send      send frames:       actorflow send --host H:P --file F (--framed | --newlines)
  receive   receive output:    actorflow receive --listen H:P [--framed] [--output F]
  gen       generate data:     actorflow gen alphabet --messages N --output F
  status    cluster status:    actorflow status --control H:P [--json]
  shutdown  stop a cluster:    actorflow shutdown --control H:P (restarts from its files)
  shrink    workers leave:     actorflow shrink --control H:P (--workers W,... | --count N)
  clean     remove files:      actorflow clean --resilience-dir D
  token     a stream's token:  actorflow token --stream NAME (for actorflow send --acked)
  metrics   metrics hub:       actorflow metrics --listen H:P --http H:P
  demo      run the alphabet example end to end on this machine
  bench     measure throughput against a plain Python loop

'actorflow COMMAND --help' describes each command; 'actorflow --version' prints the version."""


def examples_main(argv: Sequence[str]) -> int:
    """`actorflow examples`: the example apps that ship with the package, with where their
    config files are, since an installed package has no conf/ next to the user."""
    import argparse

    from actorflow import examples

    parser = argparse.ArgumentParser(
        prog="actorflow examples", description="List the example apps shipped with actorflow."
    )
    parser.add_argument(
        "--conf", metavar="NAME", choices=examples.NAMES, help="print only NAME's config file"
    )
    args = parser.parse_args(list(argv))
    if args.conf:
        print(examples.conf_path(args.conf))
        return 0
    for name in examples.NAMES:
        print(
            f"{name}\n  module  {examples.module_name(name)}\n  config  {examples.conf_path(name)}"
        )
    first = examples.NAMES[0]
    print(
        f"\nrun one: actorflow worker --app {examples.module_name(first)} "
        f'-c "$(actorflow examples --conf {first})"'
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        from actorflow import __version__

        print(f"actorflow {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "examples":
        return examples_main(rest)
    if command == "worker":
        from actorflow.worker import run_worker

        return run_worker(rest)
    if command in ("shutdown", "shrink", "clean", "token"):
        import argparse

        from actorflow import control

        parser = argparse.ArgumentParser(prog=f"actorflow {command}")
        getattr(control, f"configure_{command}_parser")(parser)
        return getattr(control, f"{command}_main")(parser.parse_args(rest))
    if command in ("send", "receive", "gen", "status", "metrics"):
        import argparse
        import importlib

        module = {"status": "actorflow.control", "metrics": "actorflow.metrics.hub"}.get(
            command, f"actorflow.tools.{command}"
        )
        tool = importlib.import_module(module)
        parser = argparse.ArgumentParser(prog=f"actorflow {command}")
        tool.configure_parser(parser)
        return tool.main(parser.parse_args(rest))
    if command in ("demo", "bench"):
        import importlib

        tool = importlib.import_module(f"actorflow.tools.{command}")
        return tool.run(rest)
    print(f"actorflow: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
