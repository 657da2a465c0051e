"""recsys: a recommender whose ID vectors come from frozen autoencoders, served on Kafka.

Each subcommand lives in stream_app/commands/<name>.py and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int | None`."""

from __future__ import annotations

import argparse
import importlib
import sys

from stream_app.errors import RecsysError

# Modules under stream_app.commands, in the order `recsys --help` lists them.
COMMAND_MODULES = [
    "demo",
    "data",
    "train",
    "retrain",
    "tune",
    "evaluate",
    "worker",
    "broker",
    "replay",
    "recommend",
    "tail",
    "settings",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recsys", description=__doc__.splitlines()[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"stream_app.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"stream_app.commands.{name}":
                raise
            continue  # command not built yet
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except RecsysError as exc:
        print(f"recsys {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
