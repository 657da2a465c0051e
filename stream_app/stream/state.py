"""Per-entity serving state, as kept in the user and item tables: typed rows. No Kafka here.

`EntityState` is one table row (a user or an item); `WindowEntry` is one rating in its window, oldest
first. On the item side an entry also carries the rater's vector right after the rating (float32) and
its encoded side data (sparse `((index, value), ...)`), because the item partition cannot read the user
table. Rows are stored in the compact binary encoding of `stream/codec.py`.

`stars` is scaled to -1..1 and `thumbs` is 0/1, as `FeatureSchema.encode_rates` gives them; either may
be None (a rating that gave only the other rate).

Deduplication horizon: an event is recognised as a re-delivery if its event_id is among the last
`dedup_size(window)` = max(4 * window, 64) events applied to that entity. Keys are namespaced by kind
("r:" ratings, "s:" side data), so a rating and a side-data event may share an event_id. They are kept
as 12-hex-digit (48-bit) digests, so long ids (UUIDs) do not bloat the state; two different ids of one
entity collide with probability about horizon^2 / 2^49 (1e-10 for a horizon of 256).

>>> s = new_state()
>>> add_rating(s, "e1", "item-7", (0.5, 1.0), 1.7e9, window=8)
True
>>> add_rating(s, "e1", "item-7", (0.5, 1.0), 1.7e9, window=8)  # the same event again
False
>>> s.window[0].other_id, s.n_ratings
('item-7', 1)
"""

from __future__ import annotations

import base64
import bisect
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

Side = Literal["user", "item"]
Sparse = tuple[tuple[int, float], ...]  # encoded side data: its non-zero (index, value) pairs

RATING, SIDE = "r:", "s:"
VECTOR_DECIMALS = 6  # published vectors are rounded (float32 keeps ~7 digits anyway)


class WindowEntry(NamedTuple):
    """One rating in an entity's window."""

    other_id: str  # the item (user side) or the rater (item side)
    stars: float | None  # scaled to -1..1
    thumbs: float | None  # 0/1
    ts: float  # epoch seconds
    vector: np.ndarray | None = None  # item side: the rater's vector right after the rating (float32)
    features: Sparse | None = None  # item side: the rater's encoded side data

    def same_rating(self, other_id: str, stars: float | None, thumbs: float | None, ts: float) -> bool:
        return (self.other_id, self.stars, self.thumbs, self.ts) == (other_id, stars, thumbs, ts)


@dataclass(eq=False)
class EntityState:
    """One table row: a user's or an item's serving state."""

    window: list[WindowEntry] = field(default_factory=list)  # recent ratings, oldest first
    side: dict[str, Any] = field(default_factory=dict)  # raw side-data fields, merged over side-data events
    vector: np.ndarray | None = None  # the current vector (float32); None until first computed
    n_ratings: int = 0  # ratings ever applied (training history included for bootstrapped ids)
    seen: list[str] = field(default_factory=list)  # digests of the most recent events applied (dedup)
    model_version: str | None = None  # the model that computed `vector`

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntityState):
            return NotImplemented
        return (_same_vector(self.vector, other.vector) and self.side == other.side
                and self.n_ratings == other.n_ratings and self.seen == other.seen
                and self.model_version == other.model_version and len(self.window) == len(other.window)
                and all(_same_entry(a, b) for a, b in zip(self.window, other.window, strict=True)))


def new_state() -> EntityState:
    return EntityState()


def dedup_size(window: int) -> int:
    return max(4 * int(window), 64)


def digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def is_duplicate(state: EntityState, key: str) -> bool:
    return digest(key) in state.seen


def remember(state: EntityState, key: str, window: int) -> None:
    seen = state.seen
    seen.append(digest(key))
    excess = len(seen) - dedup_size(window)
    if excess > 0:
        del seen[:excess]


def add_rating(state: EntityState, event_id: str, other_id: str, rates, ts: float, window: int,
               vector: np.ndarray | None = None, features: Sparse | None = None) -> bool:
    """Add one rating to the window, kept in time order whatever the arrival order (a partition re-read after a
    fault delivers some ratings late), dropping the oldest beyond `window`; False = duplicate, unchanged.

    rates: (stars scaled or None, thumbs or None); vector, features: the item side's rater columns.
    """
    key = RATING + str(event_id)
    if is_duplicate(state, key):
        return False
    if vector is not None:
        vector = np.asarray(vector, np.float32)
    entry = WindowEntry(str(other_id), opt_float(rates[0]), opt_float(rates[1]), float(ts), vector,
                        None if features is None else tuple((int(k), float(v)) for k, v in features))
    win = state.window
    if win and entry.ts < win[-1].ts:  # a late (e.g. re-read) rating goes where its time puts it
        bisect.insort_right(win, entry, key=lambda e: e.ts)
    else:
        win.append(entry)
    if len(win) > window:
        del win[: len(win) - window]
    state.n_ratings = int(state.n_ratings) + 1
    remember(state, key, window)
    return True


def update_side(state: EntityState, event_id: str, side: dict, window: int) -> bool:
    """Merge side-data fields into the state; False = duplicate event, unchanged."""
    key = SIDE + str(event_id)
    if is_duplicate(state, key):
        return False
    state.side = {**state.side, **side}
    remember(state, key, window)
    return True


def set_vector(state: EntityState, vector, model_version: str) -> np.ndarray:
    """Store the vector (float32, rounded to VECTOR_DECIMALS) and return what was stored."""
    stored = np.round(np.asarray(vector, np.float64), VECTOR_DECIMALS).astype(np.float32)
    state.vector = stored
    state.model_version = model_version
    return stored


def pack_vector(vector) -> str:
    """A vector as base64 of its float32 bytes (the internal item-updates topic carries it this way)."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def unpack_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def window_columns(state: EntityState) -> tuple[list[str], list[list[float | None]], list[float]]:
    """(other ids, rates [[stars, thumbs]], ts) of the window, oldest first."""
    win = state.window
    return [e.other_id for e in win], [[e.stars, e.thumbs] for e in win], [e.ts for e in win]


def in_window(state: EntityState, other_id: str, rates, ts: float) -> bool:
    """Whether the window holds exactly this rating (other id, rates and time): a re-delivered event."""
    key = (str(other_id), opt_float(rates[0]), opt_float(rates[1]), float(ts))
    return any(e.same_rating(*key) for e in state.window)


def rated_ids(state: EntityState) -> set[str]:
    return {e.other_id for e in state.window}


def to_sparse(features) -> Sparse:
    """Encoded side data as its non-zero (index, value) pairs (mostly one-hot: a few pairs)."""
    features = np.asarray(features)
    return tuple((int(k), round(float(features[k]), 6)) for k in np.flatnonzero(features))


def to_dense(rows, width: int) -> np.ndarray:
    """[len(rows), width] float32 from rows of (index, value) pairs; indices outside the width are dropped."""
    out = np.zeros((len(rows), width), np.float32)
    lengths = np.fromiter((len(row) if row else 0 for row in rows), np.int64, len(rows))
    if not lengths.sum():
        return out
    pairs = np.array([pair for row in rows if row for pair in row], np.float64).reshape(-1, 2)
    where = np.repeat(np.arange(len(rows)), lengths)
    k = pairs[:, 0].astype(np.int64)
    keep = (k >= 0) & (k < width)
    out[where[keep], k[keep]] = pairs[keep, 1]
    return out


def opt_float(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if x != x else x  # NaN -> None


def _same_vector(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return np.array_equal(a, b)


def _same_entry(a: WindowEntry, b: WindowEntry) -> bool:
    return a[:4] == b[:4] and a.features == b.features and _same_vector(a.vector, b.vector)
