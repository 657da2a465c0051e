"""The chaos soak's ledger: every rating it produced (and re-sent), and the checks of the pipeline's final state
against it. No Kafka here: bench/soak.py feeds it what it read back, tests/test_soak.py feeds it made-up states.

A rating is identified by its `ts`: the source gives every rating its own, strictly increasing ts (the wall
time it was sent, at least 1 ms after the previous one), so the stored windows say which ratings they hold.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import NamedTuple

import numpy as np

RECENT = 32  # re-sends pick one of the last RECENT ratings: well inside the worker's dedup horizon per entity
EXAMPLES = 5  # offending entities listed per finding


class Published(NamedTuple):
    """One message of user-vectors or item-vectors, as read back (in offset order per partition)."""

    key: str
    n_ratings: int
    model_version: str
    at: float  # publish time: the record's timestamp (s), set by the worker's producer


class RatingSource:
    """Ratings of `n_users` users on `n_items` items, users uniform and item popularity ~ 1 / (rank + 10) (every
    item gets many ratings, a few get most); a fraction of the calls re-send one of the recent ratings instead."""

    def __init__(self, seed: int, n_users: int, n_items: int, resend_fraction: float, prefix: str = "soak"):
        self.rng = np.random.default_rng(seed)
        self.users = [f"{prefix}-u{k}" for k in range(n_users)]
        self.items = [f"{prefix}-i{k}" for k in range(n_items)]
        weights = 1.0 / (np.arange(n_items) + 10.0)
        self.item_p = weights / weights.sum()
        self.resend_fraction = resend_fraction
        self.prefix = prefix
        self.recent: collections.deque = collections.deque(maxlen=RECENT)
        self.count = 0
        self.last_ts = 0.0

    def next(self, resend: bool = True) -> tuple[dict, bool]:
        """(event, whether it is a re-send of an earlier one)."""
        if resend and self.recent and self.rng.random() < self.resend_fraction:
            return self.recent[int(self.rng.integers(len(self.recent)))], True
        self.last_ts = max(round(time.time(), 3), round(self.last_ts + 0.001, 3))
        user = self.users[int(self.rng.integers(len(self.users)))]
        event = {"event_id": f"{self.prefix}-{self.count}", "user_id": user,
                 "item_id": self.items[int(self.rng.choice(len(self.items), p=self.item_p))],
                 "rating": int(self.rng.integers(1, 6)), "ts": self.last_ts}
        self.count += 1
        self.recent.append(event)
        return event, False


class Ledger:
    """What was sent: each entity's ratings (their ts, in send order), re-sends, and the next offset per ratings
    partition as the broker acknowledged it (thread-safe: the producer's callbacks write it)."""

    def __init__(self):
        self.user_ts: dict[str, list[float]] = collections.defaultdict(list)
        self.item_ts: dict[str, list[float]] = collections.defaultdict(list)
        self.pair: dict[float, tuple[str, str]] = {}  # ts -> (user, item)
        self.resent = 0
        self.send_errors = 0
        self.ends: dict[int, int] = {}
        self._lock = threading.Lock()

    def record(self, event: dict, resend: bool) -> None:
        if resend:
            self.resent += 1
            return
        ts = float(event["ts"])
        self.user_ts[event["user_id"]].append(ts)
        self.item_ts[event["item_id"]].append(ts)
        self.pair[ts] = (event["user_id"], event["item_id"])

    def acked(self, metadata) -> None:
        with self._lock:
            self.ends[metadata.partition] = max(self.ends.get(metadata.partition, 0), metadata.offset + 1)

    def failed(self, _exc) -> None:
        with self._lock:
            self.send_errors += 1

    def snapshot_ends(self) -> dict[int, int]:
        with self._lock:
            return dict(self.ends)

    def windows_full_at(self, user_window: int, item_window: int) -> float | None:
        """When the last entity got its `window`-th rating: from then on the stored state no longer grows (None if
        some entity never got that many)."""
        firsts = [ts[window - 1] if len(ts) >= window else None
                  for entities, window in ((self.user_ts, user_window), (self.item_ts, item_window))
                  for ts in entities.values()]
        return None if not firsts or None in firsts else max(firsts)

    @property
    def ratings(self) -> int:
        return len(self.pair)


def check_side(side: str, expected: dict[str, list[float]], pair: dict[float, tuple[str, str]],
               published: list[Published], table: dict, window: int) -> dict:
    """Each entity's final state against what was sent to it: the stored row (table) holds n_ratings = its
    ratings and a window of exactly its last ratings (user side: the last `window` in send order; item side,
    whose arrival order interleaves user partitions: `window` distinct ratings of that item); the last message
    published for it counts them all, and no message counted more."""
    last: dict[str, int] = {}
    most: dict[str, int] = {}
    for m in published:
        last[m.key] = m.n_ratings
        most[m.key] = max(most.get(m.key, 0), m.n_ratings)
    lost = doubled = 0
    bad: dict[str, list] = {"table_count": [], "window": [], "last_published": [], "published_above": []}
    for key, stamps in expected.items():
        want = len(stamps)
        row = table.get(key)
        stored = row.n_ratings if row is not None else 0
        lost += max(want - stored, 0)
        doubled += max(stored - want, 0)
        if stored != want:
            bad["table_count"].append((key, want, stored))
        got = [e.ts for e in row.window] if row is not None else []
        others = [e.other_id for e in row.window] if row is not None else []
        me = 0 if side == "user" else 1
        if side == "user":
            window_ok = got == stamps[-window:]
        else:
            window_ok = (len(got) == min(window, want) and len(set(got)) == len(got) and set(got) <= set(stamps))
        window_ok = window_ok and all(pair.get(t, ("", ""))[1 - me] == o for t, o in zip(got, others, strict=True))
        if not window_ok:
            bad["window"].append((key, want, len(got), len(got) - len(set(got))))
        if last.get(key) != want:
            bad["last_published"].append((key, want, last.get(key)))
        if most.get(key, 0) > want:
            bad["published_above"].append((key, want, most[key]))
    return {"entities": len(expected), "ratings": sum(map(len, expected.values())), "lost": lost,
            "double_counted": doubled, **{f"{name}_wrong": len(v) for name, v in bad.items()},
            "examples": {name: v[:EXAMPLES] for name, v in bad.items() if v}}


def check_swap(expected: dict[str, list[float]], published: list[Published], new_version: str | None,
               swapped_at: float | None) -> dict:
    """The swap: every message published after `swapped_at` (when every live worker served the new model)
    carries `new_version`, and so does the last message of every entity rated after it."""
    if new_version is None or swapped_at is None:
        return {"swapped": False, "old_after_swap": None, "stale_last": None, "rated_after_swap": 0}
    old_after = sum(1 for m in published if m.at > swapped_at and m.model_version != new_version)
    last = {m.key: m.model_version for m in published}
    rated_after = [key for key, stamps in expected.items() if stamps and stamps[-1] > swapped_at]
    stale = [key for key in rated_after if last.get(key) != new_version]
    return {"swapped": True, "old_after_swap": old_after, "stale_last": len(stale),
            "rated_after_swap": len(rated_after), "examples": stale[:EXAMPLES]}


def publish_latency(expected: dict[str, list[float]], published: list[Published]) -> tuple[np.ndarray, np.ndarray]:
    """(send time, seconds until published) of each rating: the k-th rating of an entity is published by its
    first message counting k or more (a republished older count does not go back)."""
    messages: dict[str, list[Published]] = collections.defaultdict(list)
    for m in published:
        messages[m.key].append(m)
    sent, delay = [], []
    for key, stamps in expected.items():
        done = 0
        for m in messages.get(key, ()):
            upto = min(m.n_ratings, len(stamps))
            for k in range(done, upto):
                sent.append(stamps[k])
                delay.append(m.at - stamps[k])
            done = max(done, upto)
    order = np.argsort(sent, kind="stable")
    return np.asarray(sent)[order], np.asarray(delay)[order]
