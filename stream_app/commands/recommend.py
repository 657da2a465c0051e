"""`recsys recommend`: ask the running worker for a user's top-N and print it as a table.

Sends `{"request_id", "user_id", "n"}` (keyed by user id) to the requests topic and waits for the
recommendation that carries the same request_id on the recommendations topic.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from stream_app.commands.datacheck import add_allow_other_data_flag, check_same_data, model_manifest
from stream_app.errors import RecsysError
from stream_app.settings import add_setting_flags, settings_from_args


def register(sub):
    p = sub.add_parser("recommend", help="ask the running worker for a user's top-N",
                       description=__doc__.split(": ", 1)[1])
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--n", type=int, default=None, help="length of the list (default: TOP_N)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the reply")
    p.add_argument("--titles-from", default=None, metavar="DATA",
                   help="show item titles from this dataset's side data (ml-100k, ml-1m, ..., synthetic with "
                        "its default size)")
    add_allow_other_data_flag(p)
    p.add_argument("--json", action="store_true", help="print the reply as JSON instead of a table")
    add_setting_flags(p, "broker_url", "partitions", "replication_factor", "topic_requests", "topic_recommendations",
                      "top_n", "artifacts_dir", "data", "seed")
    p.set_defaults(func=run)


class NoReply(RecsysError):
    """No recommendation answered the request in time."""


@dataclass
class Reply:
    request_id: str
    user_id: str
    items: list  # [{"item_id", "score", "rank_score"}], best first (by rank_score)
    model_version: str
    seconds: float  # from sending the request to receiving the reply
    value: dict  # the reply as received


def no_reply_message(timeout: float) -> str:
    return f"no reply in {timeout:g} s: is a worker running? `recsys worker`"


def request_recommendations(settings, user_id: str, n: int | None = None, timeout: float = 15.0,
                            producer=None, check: Callable[[], None] | None = None) -> Reply:
    """Send one request and wait for its reply; raises NoReply after `timeout` seconds.

    `check()` is called between polls (e.g. to raise if the worker process died)."""
    from stream_app.clients import END, TopicReader, bootstrap_servers, ensure_topics, json_producer

    bootstrap = bootstrap_servers(settings)
    n = settings.top_n if n is None else int(n)
    if not 1 <= n <= 1000:
        raise RecsysError(f"--n must be in 1..1000, not {n}")
    ensure_topics(settings, [settings.topic_requests])
    request_id = uuid.uuid4().hex
    own_producer = producer is None
    with TopicReader(bootstrap, settings.topic_recommendations, start=END) as reader:
        producer = producer or json_producer(bootstrap)
        try:
            started = time.perf_counter()
            producer.send(settings.topic_requests, key=str(user_id),
                          value={"request_id": request_id, "user_id": str(user_id), "n": n}).get(timeout=10)
            record = None
            while record is None:
                waited = time.perf_counter() - started
                if waited >= timeout:
                    raise NoReply(no_reply_message(timeout))
                if check is not None:
                    check()
                record = next((r for r in reader.poll(min(0.5, timeout - waited))
                               if isinstance(r.value, dict) and r.value.get("request_id") == request_id), None)
            seconds = time.perf_counter() - started
        finally:
            if own_producer:
                producer.close()
    value = record.value
    return Reply(request_id, str(value.get("user_id")), list(value.get("items") or []),
                 str(value.get("model_version", "")), seconds, value)


RANKING_NOTE = "ranked by rank score = predicted stars + popularity (see --popularity-weight of recsys train)"


def format_table(items: list, titles: dict | None = None, marks: dict | None = None) -> str:
    """rank, item id, rank score, predicted stars (and title) per line, under a line that says what the order
    is; `marks` adds a last column per item id (e.g. "new"). A reply without rank scores shows "-"."""
    titles = titles or {}
    width = max([len("item")] + [len(str(i["item_id"])) for i in items])
    head = f"{'rank':>4}  {'item':<{width}}  {'rank score':>10}  {'stars':>5}"
    if titles:
        head += "  title"
    lines = [RANKING_NOTE, head]
    for rank, entry in enumerate(items, 1):
        item_id = str(entry["item_id"])
        by = entry.get("rank_score")
        line = (f"{rank:>4}  {item_id:<{width}}  {'-' if by is None else f'{float(by):.3f}':>10}  "
                f"{float(entry['score']):>5.2f}")
        if titles:
            line += f"  {_clip(titles.get(item_id, ''), 48):<48}"
        if marks and marks.get(item_id):
            line += f"  {marks[item_id]}"
        lines.append(line.rstrip())
    return "\n".join(lines)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def titles_from(name: str, settings) -> dict[str, str]:
    """item id -> title from a dataset's side data (empty if it has none)."""
    from stream_app.data.registry import load_dataset

    data = load_dataset(name, settings) if name != "synthetic" else load_dataset("synthetic", seed=settings.seed)
    return {item_id: side.get("title", "") for item_id, side in zip(data.item_ids, data.items, strict=True)
            if side.get("title")}


def run(args) -> int:
    settings = settings_from_args(args)
    reply = request_recommendations(settings, args.user, args.n, args.timeout)
    titles = None
    if args.titles_from:
        manifest = model_manifest(settings.artifacts_dir, reply.model_version)  # the model that answered
        if manifest is not None:
            check_same_data(manifest, args.titles_from, args.allow_other_data, flag="--titles-from")
        titles = titles_from(args.titles_from, settings)
    if args.json:
        print(json.dumps(reply.value, indent=2))
        return 0
    print(f"top-{len(reply.items)} for user {reply.user_id} (model {reply.model_version}, "
          f"answered in {reply.seconds * 1000:.0f} ms)")
    if reply.items:
        print(format_table(reply.items, titles))
    else:
        print("(no items: the worker's catalogue is empty or the user has rated everything)")
    return 0
