"""`recsys tail`: print the records of a topic as `key<TAB>json`, one per line (or pretty-printed).

Reads without a consumer group (it never joins or disturbs the worker's group). By default it follows the
topic from its current end; with --from-beginning it prints what the topic holds and stops at its end,
unless --follow is given too.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from stream_app.errors import RecsysError
from stream_app.settings import add_setting_flags, settings_from_args


def register(sub):
    p = sub.add_parser("tail", help="print the records of a topic (key<TAB>json)",
                       description=__doc__.split(": ", 1)[1])
    p.add_argument("topic", help="topic name, e.g. recommendations, user-vectors, dead-letters")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default: the end)")
    p.add_argument("--follow", action=argparse.BooleanOptionalAction, default=None,
                   help="keep waiting for new records (default: on, except with --from-beginning)")
    p.add_argument("--limit", type=int, default=None, help="stop after printing N records")
    p.add_argument("--key", default=None, help="only records with this key (e.g. a user id)")
    p.add_argument("--idle", type=float, default=None, help="with --follow: stop after S seconds without a record")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--pretty", action="store_true", help="indented JSON")
    style.add_argument("--compact", dest="pretty", action="store_false", help="one line per record (default)")
    add_setting_flags(p, "broker_url")
    p.set_defaults(func=run)


def format_record(record, pretty: bool = False) -> str:
    """`key<TAB>value`: the value re-serialized as JSON (pretty or compact), or its text if it is not JSON."""
    key = "null" if record.key is None else record.key
    if not record.is_json:
        return f"{key}\t{record.value}"
    if pretty:
        value = json.dumps(record.value, indent=2, ensure_ascii=False)
    else:
        value = json.dumps(record.value, separators=(",", ":"), ensure_ascii=False)
    return f"{key}\t{value}"


def run(args) -> int:
    from stream_app.clients import BEGINNING, END, TopicReader, bootstrap_servers

    settings = settings_from_args(args)
    follow = (not args.from_beginning) if args.follow is None else args.follow
    bootstrap = bootstrap_servers(settings)
    printed = 0
    with TopicReader(bootstrap, args.topic, start=BEGINNING if args.from_beginning else END) as reader:
        if not reader.complete:
            if not follow:
                existing = sorted(t for t in reader.consumer.topics() if not t.startswith("__"))
                raise RecsysError(f"topic {args.topic!r} does not exist on {bootstrap}; topics there: "
                                  f"{', '.join(existing) or 'none'}")
            print(f"waiting for topic {args.topic!r} to appear on {bootstrap}...", file=sys.stderr)
        try:
            for record in _records(reader, follow, args.idle):
                if args.key is not None and record.key != args.key:
                    continue
                print(format_record(record, args.pretty), flush=follow)
                printed += 1
                if args.limit is not None and printed >= args.limit:
                    break
        except BrokenPipeError:  # `recsys tail ... | head`
            sys.stderr.close()
            return 0
    return 0


def _records(reader, follow: bool, idle: float | None) -> Iterator:
    if follow:
        yield from reader.records(idle=idle)
        return
    while not reader.at_end():
        yield from reader.poll(0.2)
