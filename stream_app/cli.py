"""recsys: a recommender whose ID vectors come from frozen autoencoders, served on Kafka.

Each subcommand lives in stream_app/commands/<name>.py and exposes `register(subparsers)`,
which adds its parser and sets `func(args) -> int | None`.

Errors: a command raises a `RecsysError` (stream_app/errors.py) where it detects the problem; `main`
prints it as one line, `recsys: error: <what is wrong and how to fix it>`, and exits 2 (the traceback
only with `recsys --debug ...`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from stream_app import __version__
from stream_app.errors import RecsysError

USAGE_ERROR = 2  # exit status of every user error (bad flag, missing data or model, port in use, ...)

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


class Parser(argparse.ArgumentParser):
    """A bad flag is a usage error like the others: one line (not the whole usage), exit 2."""

    def error(self, message: str):
        self.exit(USAGE_ERROR, f"recsys: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recsys", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: one line that names the fix)")
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
        if args.debug:
            raise
        print(f"recsys: error: {one_line(exc)}", file=sys.stderr)
        return USAGE_ERROR


def one_line(exc: BaseException) -> str:
    """The error's message on one line (a multi-line message is joined with "; ")."""
    return "; ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
