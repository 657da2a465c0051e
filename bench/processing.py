"""The worker's pure batch processor alone (no Kafka, no Faust): ratings/s and where a rating's time goes.

    python bench/processing.py                 # ~1 min: 3 000 ratings in batches of 40, the stream bench's model
    python bench/processing.py --profile 25    # also the 25 costliest functions (cProfile, cumulative)

The same path as a worker's two agents (stream_app/worker/app.py run_batch), in one thread: rating events
of bench/stream.py's workload (users uniform, items by popularity; its cached ML-1M-shaped synthetic model,
default network sizes) are parsed and grouped (`prepare`), their rows read from a dict of encoded rows
(decoded through the codec's row cache, as the worker does), processed (`process_users`: fold-in, top-N,
forwards), and the rows encoded and stored back; the forwards, serialized as on the internal topic, go the
same way through `process_items`. Outputs are turned into their JSON values but not sent. Timed per stage
(seconds per rating, all ratings over all batches), so that the worker's own Python and model cost can be
told from the framework's and the broker's (bench/stream.py measures the whole worker).

Writes bench/results/processing.json and processing.png (ms per rating by stage).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one BLAS thread, as the worker

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RESULTS = ROOT / "bench" / "results"
STAGES = ("parse + group", "read rows", "process", "encode + store rows", "output values")


class Stages:
    """Seconds spent per (side, stage)."""

    def __init__(self):
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)

    def timed(self, side: str, stage: str, fn, *args):
        started = time.perf_counter()
        result = fn(*args)
        self.seconds[(side, stage)] += time.perf_counter() - started
        return result


def run_side(side: str, events, table: dict, cache, ctx, stages: Stages, rekey: frozenset):
    """One agent batch of `side` as the worker runs it; returns the outcome."""
    from stream_app.stream.codec import encode_row
    from stream_app.stream.item_batch import parse_item_event, process_items
    from stream_app.stream.processing import prepare, read_rows
    from stream_app.stream.user_batch import parse_user_event, process_users

    parse, process = (parse_user_event, process_users) if side == "user" else (parse_item_event, process_items)
    batch = stages.timed(side, "parse + group", prepare, events, lambda r: parse(r, ctx), ctx, rekey)
    rows = stages.timed(side, "read rows", read_rows, batch, lambda key, _event: cache.take(key, table.get(key)))
    out = stages.timed(side, "process", process, batch, rows, ctx)

    def store():
        for key, (state, _) in out.writes.items():
            raw = encode_row(state)
            table[key] = raw
            cache.put(key, raw, state)

    stages.timed(side, "encode + store rows", store)

    def values():
        return [json.dumps(o.payload()).encode() for o in out.outputs]

    return out, stages.timed(side, "output values", values)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ratings", type=int, default=3000)
    p.add_argument("--batch", type=int, default=40, help="events per agent batch (a busy worker's mean: ~35-40)")
    p.add_argument("--recommend", choices=("on", "off"), default="on", help="top-N after each batch (rec-on)")
    p.add_argument("--profile", type=int, default=0, help="print the N costliest functions (cProfile)")
    p.add_argument("--sort", default="cumulative", help="order of --profile's list (cumulative, tottime, ...)")
    p.add_argument("--residual-rank", type=int, default=None,
                   help="the model's residual factor width (default: the stream bench's, bench/stream.py MODEL)")
    p.add_argument("--out", default=str(RESULTS / "processing.json"))
    args = p.parse_args(argv)

    import stream
    from stream import QUICK, artifact, git_commit, machine, rating_events

    if args.residual_rank is not None:
        stream.MODEL = {**stream.MODEL, "residual_rank": args.residual_rank}

    from stream_app.core.artifacts import load_artifact
    from stream_app.settings import Settings
    from stream_app.stream.codec import RowCache
    from stream_app.stream.metrics import StreamMetrics
    from stream_app.stream.processing import Context, RateLimiter, RawEvent
    from stream_app.stream.service import FoldInService
    from stream_app.worker.topics import internal_topic, rekey_topics

    rec = load_artifact(artifact(QUICK))
    popularity = np.bincount(rec.history.item, minlength=len(rec.ids["item"])).astype(np.float64) + 1.0
    settings = Settings(recommend_on_rating=args.recommend == "on")
    service = FoldInService.from_settings(rec, settings)
    ctx = Context(service, settings, StreamMetrics(), lambda topic, key: 0, RateLimiter(settings.recommend_interval))
    rekey = rekey_topics(settings)
    forward_topic = internal_topic(settings)
    events = rating_events(rec.ids, popularity / popularity.sum(), args.ratings, np.random.default_rng(1),
                           distinct_users=False)
    raw = [RawEvent(settings.topic_ratings, 0, n, e["user_id"].encode(), json.dumps(e).encode(), e["ts"])
           for n, e in enumerate(events)]
    tables = {"user": {}, "item": {}}
    caches = {"user": RowCache(), "item": RowCache()}
    stages = Stages()
    counts = defaultdict(int)
    profiler = cProfile.Profile() if args.profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    offset = 0
    for b in range(0, len(raw), args.batch):
        out, _ = run_side("user", raw[b:b + args.batch], tables["user"], caches["user"], ctx, stages, rekey)
        forwards = []
        for o in out.outputs:
            counts[o.topic] += 1
            if o.topic == "item_updates":
                forwards.append(RawEvent(forward_topic, 0, offset, o.key.encode(), json.dumps(o.payload()).encode(),
                                         o.timestamp))
                offset += 1
        out, _ = run_side("item", forwards, tables["item"], caches["item"], ctx, stages, rekey)
        for o in out.outputs:
            counts[o.topic] += 1
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    n = len(raw)

    per_rating = {f"{side} {stage}": stages.seconds[(side, stage)] / n * 1000 for side in ("user", "item")
                  for stage in STAGES}
    result = {"ratings": n, "batch": args.batch, "recommend_on_rating": args.recommend == "on",
              "seconds": elapsed, "ratings_per_s": n / elapsed, "ms_per_rating": per_rating,
              "outputs_per_rating": {k: v / n for k, v in sorted(counts.items())},
              "model": rec.model_version, "model_config": stream.MODEL,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "git": git_commit(), "machine": machine(), "profiled": bool(profiler),
              "command": "python bench/processing.py " + " ".join(argv or sys.argv[1:])}
    print(f"{n} ratings in batches of {args.batch}, recommendations {args.recommend}: {elapsed:.1f} s, "
          f"{n / elapsed:,.0f} ratings/s{' (under cProfile: slower)' if profiler else ''}")
    print(f"{'stage':<28} {'ms/rating':>9}")
    for key, ms in per_rating.items():
        print(f"{key:<28} {ms:9.3f}")
    print(f"{'all':<28} {sum(per_rating.values()):9.3f}")
    print("outputs per rating: " + ", ".join(f"{k} {v:.2f}" for k, v in result["outputs_per_rating"].items()))
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(args.sort).print_stats(args.profile)
        print(text.getvalue())
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out_path.with_suffix(".png"))
    print(f"wrote {out_path} and {out_path.with_suffix('.png')}")
    return 0


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["ms_per_rating"])
    values = [result["ms_per_rating"][k] for k in names]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.barh(names[::-1], values[::-1], color="#4878a8")
    ax.set_xlabel("ms per rating")
    ax.set_title(f"pure batch processor: {result['ratings_per_s']:,.0f} ratings/s "
                 f"(batch {result['batch']}, recommendations {'on' if result['recommend_on_rating'] else 'off'})",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
