"""`recsys retrain`: periodic retraining (METHOD.md, "Serving without training").

Each run trains a new versioned artifact `ARTIFACTS_DIR/<data>-<split>-<time>` from the configured data
(the same code and flags as `recsys train`) and promotes it by rewriting `ARTIFACTS_DIR/current`
atomically; running workers poll that pointer and swap the new model in between batches. A run that
fails leaves `current` alone (the workers keep their model); with --every the next run is tried on
schedule.
"""

from __future__ import annotations

import re
import sys
import time
import traceback

from stream_app.commands.common import positive_int
from stream_app.commands.train import add_training_flags, train_model
from stream_app.errors import RecsysError
from stream_app.settings import settings_from_args

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'24h', '90m', '45s', '2d', '1h30m' or plain seconds -> seconds (> 0)."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"not a duration: {text!r} (e.g. 24h, 90m, 1h30m, 3600)")
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("the period must be positive")
    return seconds


def _duration(text: str) -> float:
    import argparse

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(sub):
    p = sub.add_parser("retrain", help="retrain periodically (or once) and promote each new model",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=_duration, metavar="PERIOD",
                      help="train one model now and then every PERIOD (24h, 90m, 1h30m, seconds)")
    when.add_argument("--once", action="store_true", help="train one model and exit (for cron jobs)")
    p.add_argument("--keep", type=positive_int, default=None, metavar="N",
                   help="after each run, delete all but the N newest artifacts in ARTIFACTS_DIR (the current one "
                        "is always kept and counts among the N; default: keep all)")
    add_training_flags(p)
    p.set_defaults(func=run)



def run(args) -> int:
    from stream_app.core.artifacts import prune_artifacts

    settings = settings_from_args(args)
    while True:
        started = time.monotonic()
        try:
            out, report = train_model(args, settings, beside_serving=True)
        except (RecsysError, Exception) as exc:  # noqa: BLE001 (a failed run must not end the schedule)
            if args.once:
                raise
            traceback.print_exc()
            print(f"retrain: run failed ({exc}); `current` unchanged", file=sys.stderr, flush=True)
        else:
            state = "promoted: ARTIFACTS_DIR/current names it" if report["promoted"] else "not promoted"
            print(f"retrain: {out} ({report['model_version']}) trained in {report['train_seconds']:.0f} s; "
                  f"{state}", flush=True)
            if args.keep:
                for folder in prune_artifacts(settings.artifacts_dir, args.keep):
                    print(f"retrain: removed old artifact {folder}", flush=True)
        if args.once:
            return 0
        wait = max(0.0, args.every - (time.monotonic() - started))
        print(f"retrain: next run in {wait:.0f} s", flush=True)
        time.sleep(wait)
