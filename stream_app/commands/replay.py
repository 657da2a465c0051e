"""`recsys replay`: produce a dataset's users, items and ratings onto the input topics, as a live stream would.

Order: user side data, item side data, then the ratings in time order (ties in file order), each keyed by
its entity id (ratings by user id). Event ids are deterministic, so a re-run re-delivers the same events
and the worker drops them as duplicates:

    <label>:u:<user id>    <label>:i:<item id>    <label>:r:<user id>:<item id>:<ts>

<label> is the dataset name (synthetic data: `synthetic-<users>x<items>-s<seed>`). A rating's id names the
rating itself, not its row, so it is the same whichever split part delivers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from stream_app.commands.common import add_data_flags, load_split_for, show_progress
from stream_app.commands.datacheck import add_allow_other_data_flag, check_same_data, model_manifest
from stream_app.data.dataset import RatingData
from stream_app.errors import RecsysError
from stream_app.settings import add_setting_flags, settings_from_args

PARTS = ("all", "train", "test")
USERS, ITEMS, RATINGS = "users", "items", "ratings"


def register(sub):
    p = sub.add_parser("replay", help="produce a dataset's users, items and ratings (in time order) to Kafka",
                       description=__doc__.split("\n\n", 1)[0].split(": ", 1)[1])
    add_data_flags(p)
    add_allow_other_data_flag(p)
    p.add_argument("--part", choices=PARTS, default="all",
                   help="all ratings (default), or only the train or test part of --split")
    p.add_argument("--rate", type=float, default=500.0, help="events per second (0 = as fast as possible)")
    p.add_argument("--limit", type=int, default=None, help="replay at most N ratings")
    p.add_argument("--skip", type=int, default=0, help="skip the first N ratings (in time order)")
    p.add_argument("--all-entities", action="store_true",
                   help="send the side data of every user and item, not only of those the ratings name")
    p.add_argument("--no-side-data", dest="side_data", action="store_false", help="send the ratings only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_setting_flags(p, "data", "seed", "artifacts_dir", "broker_url", "partitions", "replication_factor",
                      "topic_users", "topic_items", "topic_ratings")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------- events

@dataclass(frozen=True)
class Event:
    kind: str  # users, items or ratings
    key: str
    value: dict


def dataset_label(name: str, data: RatingData | None = None, seed: int = 0) -> str:
    """Prefix of event ids: the dataset name; synthetic data also names its size and seed."""
    if name == "synthetic" and data is not None:
        return f"synthetic-{data.n_users}x{data.n_items}-s{seed}"
    return name


def _plain(value):
    """numpy scalars -> Python numbers; integral floats -> int (JSON `4`, not `4.0`)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rating_rows(data: RatingData, skip: int = 0, limit: int | None = None) -> np.ndarray:
    """Row indices of the ratings to replay: time order, then --skip and --limit."""
    order = data.time_order()[max(0, skip):]
    return order if limit is None else order[: max(0, limit)]


def rating_event(data: RatingData, row: int, label: str) -> Event:
    user_id, item_id = data.user_ids[data.user[row]], data.item_ids[data.item[row]]
    ts = int(data.ts[row])
    value = {"event_id": f"{label}:r:{user_id}:{item_id}:{ts}", "user_id": user_id, "item_id": item_id,
             "rating": _plain(float(data.rating[row])), "ts": ts}
    return Event(RATINGS, user_id, value)


def side_events(data: RatingData, label: str, users: Iterable[int], items: Iterable[int]) -> list[Event]:
    """Side-data events of the given dense user and item indices (entities without side data are skipped)."""
    out = []
    for kind, index, ids, sides, id_field, tag in ((USERS, users, data.user_ids, data.users, "user_id", "u"),
                                                   (ITEMS, items, data.item_ids, data.items, "item_id", "i")):
        for e in index:
            side = {k: _plain(v) for k, v in sides[e].items() if v is not None}
            if not side:
                continue
            entity_id = ids[e]
            out.append(Event(kind, entity_id, {"event_id": f"{label}:{tag}:{entity_id}", id_field: entity_id,
                                               **side}))
    return out


def plan_events(data: RatingData, label: str, skip: int = 0, limit: int | None = None,
                side_data: bool = True, all_entities: bool = False) -> list[Event]:
    """Users, items (those the replayed ratings name, or all), then the ratings in time order."""
    rows = rating_rows(data, skip, limit)
    events: list[Event] = []
    if side_data:
        if all_entities:
            users, items = range(data.n_users), range(data.n_items)
        else:
            users = dict.fromkeys(data.user[rows].tolist())
            items = dict.fromkeys(data.item[rows].tolist())
        events.extend(side_events(data, label, users, items))
    events.extend(rating_event(data, int(r), label) for r in rows)
    return events


# ---------------------------------------------------------------------------------------------- producing

@dataclass
class ReplayStats:
    counts: dict = field(default_factory=lambda: {USERS: 0, ITEMS: 0, RATINGS: 0})
    failed: int = 0
    first_error: str = ""
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        c = self.counts
        rate = f"{self.rate:,.0f}" if self.seconds > 0 else "inf"
        return (f"produced {c[USERS]} users, {c[ITEMS]} items, {c[RATINGS]} ratings ({self.total} events) "
                f"in {self.seconds:.1f} s: {rate} events/s")


def topics_of(settings) -> dict[str, str]:
    return {USERS: settings.topic_users, ITEMS: settings.topic_items, RATINGS: settings.topic_ratings}


def produce_events(producer, events: Sequence[Event], topics: dict[str, str], rate: float = 0.0,
                   progress: bool = True, desc: str = "replay") -> ReplayStats:
    """Send the events in order at `rate` events/s (0 = as fast as possible), flush, count what was acknowledged."""
    from tqdm.auto import tqdm

    stats = ReplayStats()

    def failed(exc):
        stats.failed += 1
        stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"

    started = time.perf_counter()
    with tqdm(total=len(events), unit="ev", desc=desc, disable=not progress, smoothing=0.1) as bar:
        for k, event in enumerate(events):
            if rate > 0:
                ahead = started + k / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            producer.send(topics[event.kind], value=event.value, key=event.key).add_errback(failed)
            stats.counts[event.kind] += 1
            bar.update(1)
        producer.flush()
    stats.seconds = time.perf_counter() - started
    return stats


# ---------------------------------------------------------------------------------------------- command

def load_replay_data(args, settings) -> RatingData:
    from stream_app.data.registry import load_dataset

    if args.part == "all":
        if args.split:
            raise RecsysError("--split selects a part to replay: add --part train or --part test")
        if args.data == "synthetic":
            return load_dataset("synthetic", n_users=args.synthetic_users, n_items=args.synthetic_items,
                                seed=settings.seed)
        return load_dataset(args.data, settings)
    split = load_split_for(args, settings)
    return split.train if args.part == "train" else split.test


def run(args) -> int:
    from stream_app.clients import bootstrap_servers, ensure_topics, json_producer

    settings = settings_from_args(args)
    if args.rate < 0:
        raise RecsysError("--rate must be >= 0 (0 = as fast as possible)")
    if not args.allow_other_data:  # the model of ARTIFACTS_DIR/current, which the workers serve
        manifest = model_manifest(settings.artifacts_dir)
        if manifest is not None:
            check_same_data(manifest, args.data, False)
    data = load_replay_data(args, settings)
    label = dataset_label(args.data, data, settings.seed)
    events = plan_events(data, label, skip=args.skip, limit=args.limit, side_data=args.side_data,
                         all_entities=args.all_entities)
    topics = topics_of(settings)
    bootstrap = bootstrap_servers(settings)
    ensure_topics(settings, topics.values())
    part = "" if args.part == "all" else f" ({args.part} part)"
    pace = "as fast as possible" if args.rate == 0 else f"at {args.rate:g} events/s"
    print(f"replaying {args.data}{part} to {bootstrap} {pace}: {len(events)} events")
    producer = json_producer(bootstrap)
    try:
        stats = produce_events(producer, events, topics, rate=args.rate, progress=show_progress(args.quiet))
    finally:
        producer.close()
    print(stats.summary())
    if stats.failed:
        print(f"{stats.failed} events were not acknowledged by the broker; first error: {stats.first_error}")
        return 1
    return 0
