"""Where a rating the soak lost (or counted twice) went: read back from the broker before it stops.

For each offending item the trace reads two topics from their beginning (kept whole by the embedded broker):
- `<app>-item-updates`: which of the item's ratings the user side forwarded, how often, and at which offsets;
- `<app>-items-changelog`: every row ever written for the item, in order, with its n_ratings; a row whose
  n_ratings is lower than an earlier row's is a stale write (a worker writing from an old copy of the row).
A rating sent but never forwarded was lost on the user side (or by the broker: the trace looks it up in the
ratings topic, beside the group's committed offset of its partition); one forwarded but missing from the
final row was lost on the item side. The trace is a diagnosis for bench/results, not a check: check_side decides.
"""

from __future__ import annotations

import json
from typing import Any

from stream_app.clients import TopicReader
from stream_app.stream.codec import RowDecodeError, decode_row

MAX_LISTED = 10


def trace_items(bootstrap: str, app: str, keys: list[str], sent: dict[str, list[float]],
                committed: list[int | None]) -> dict[str, Any]:
    """{item id: findings} for `keys` (items whose final count was wrong); committed: the group's final committed
    offset of each ratings partition (the sampler's last sample)."""
    if not keys:
        return {}
    wanted = set(keys)
    forwards: dict[str, dict[float, list[tuple[int, int]]]] = {k: {} for k in keys}
    with TopicReader(bootstrap, f"{app}-item-updates") as reader:
        for r in reader.read_available(120):
            value = r.value
            if isinstance(value, dict) and value.get("item_id") in wanted:
                forwards[value["item_id"]].setdefault(float(value["ts"]), []).append((r.partition, r.offset))
    history: dict[str, list[tuple[int, int, int | None, list[float]]]] = {k: [] for k in keys}
    with TopicReader(bootstrap, f"{app}-items-changelog") as reader:
        for r in reader.read_available(300):
            key = json.loads(r.key) if r.key else None
            if key not in wanted:
                continue
            try:
                row = decode_row(r.raw) if r.raw is not None else None
            except RowDecodeError:
                row = None
            history[key].append((r.partition, r.offset, None if row is None else row.n_ratings,
                                 [] if row is None else [e.ts for e in row.window]))
    found = {key: _findings(sent.get(key, []), forwards[key], history[key]) for key in keys}
    unforwarded = {t for f in found.values() for t in f["never_forwarded"]}
    if unforwarded:
        where = _in_ratings_topic(bootstrap, unforwarded, committed)
        for f in found.values():
            f["never_forwarded"] = [{"ts": t, **where.get(t, {"in_ratings_topic": False})}
                                    for t in f["never_forwarded"]]
    return found


def _in_ratings_topic(bootstrap: str, stamps: set[float], committed: list[int | None]) -> dict[float, dict[str, Any]]:
    """Where each of these ratings is in the ratings topic, and the group's committed offset of its partition."""
    where: dict[float, dict[str, Any]] = {}
    with TopicReader(bootstrap, "ratings") as reader:
        for r in reader.read_available(300):
            if isinstance(r.value, dict) and float(r.value.get("ts", -1)) in stamps:
                where.setdefault(float(r.value["ts"]), {"in_ratings_topic": True, "partition": r.partition,
                                                        "committed": committed[r.partition],
                                                        "offsets": []})["offsets"].append(r.offset)
    return where


def _findings(sent: list[float], forwarded: dict[float, list[tuple[int, int]]],
              history: list[tuple[int, int, int | None, list[float]]]) -> dict[str, Any]:
    never_forwarded: list = [t for t in sent if t not in forwarded]
    ever_stored = {t for *_, window in history for t in window}
    last_window = set(history[-1][3]) if history else set()
    drops = []
    top = -1
    for partition, offset, n, _ in history:
        if n is not None and n < top:
            drops.append({"partition": partition, "offset": offset, "n_ratings": n, "earlier_max": top})
        top = max(top, n if n is not None else -1)
    # a recent rating no row ever held (rows keep only the last `window` ratings: older ones are not checked)
    recent = sent[-len(last_window):] if last_window else []
    return {
        "sent": len(sent), "forwarded_distinct": len(forwarded),
        "forwarded_more_than_once": sum(len(v) > 1 for v in forwarded.values()),
        "never_forwarded": never_forwarded[:MAX_LISTED],
        "recent_never_stored": [{"ts": t, "at": forwarded.get(t)} for t in recent if t not in ever_stored][:MAX_LISTED],
        "changelog_rows": len(history), "n_ratings_drops": drops[:MAX_LISTED],
        "last_row": None if not history else {"partition": history[-1][0], "offset": history[-1][1],
                                              "n_ratings": history[-1][2]},
    }
