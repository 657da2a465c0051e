"""Per-entity serving state, as stored in the user and item tables: plain JSON-able dicts. No Kafka here.

    {
      "window":    [[other_id, stars, thumbs, ts], ...]          user side, oldest first
                   [[other_id, stars, thumbs, ts, vec, feats], ...] item side: the rater's vector right
                                                                  after the rating (float32, base64: see
                                                                  pack_vector) and its encoded side data
                                                                  as sparse [[index, value], ...] (the
                                                                  item partition cannot read the user
                                                                  table)
      "side":      {...}        raw side data fields, merged over side-data events
      "vector":    [...] | None the current vector (None until first computed)
      "n_ratings": int          ratings ever applied (training history included for bootstrapped ids)
      "seen":      [...]        digests of the most recent events applied, for deduplication
      "model_version": str | None  the model that computed "vector"
    }

`stars` is scaled to -1..1 and `thumbs` is 0/1, as `FeatureSchema.encode_rates` gives them; either may
be None (a rating that gave only the other rate).

Deduplication horizon: an event is recognised as a re-delivery if its event_id is among the last
`dedup_size(window)` = max(4 * window, 64) events applied to that entity. Keys are namespaced by kind
("r:" ratings, "s:" side data), so a rating and a side-data event may share an event_id. They are kept
as 12-hex-digit (48-bit) digests, so long ids (UUIDs) do not bloat the state; two different ids of one
entity collide with probability about horizon^2 / 2^49 (1e-10 for a horizon of 256).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import numpy as np

State = dict[str, Any]

RATING, SIDE = "r:", "s:"
VECTOR_DECIMALS = 6  # stored and published vectors are rounded (float32 keeps ~7 digits anyway)


def new_state() -> State:
    return {"window": [], "side": {}, "vector": None, "n_ratings": 0, "seen": [], "model_version": None}


def dedup_size(window: int) -> int:
    return max(4 * int(window), 64)


def digest(key: str) -> str:
    return hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def is_duplicate(state: State, key: str) -> bool:
    return digest(key) in state["seen"]


def remember(state: State, key: str, window: int) -> None:
    seen = state["seen"]
    seen.append(digest(key))
    excess = len(seen) - dedup_size(window)
    if excess > 0:
        del seen[:excess]


def add_rating(state: State, event_id: str, other_id: str, rates, ts: float, window: int,
               extra: list | None = None) -> bool:
    """Append one rating to the window (dropping the oldest beyond `window`); False = duplicate, unchanged.

    rates: [stars scaled or None, thumbs or None]; extra: more columns (the item side's rater vector and
    features).
    """
    key = RATING + str(event_id)
    if is_duplicate(state, key):
        return False
    entry = [str(other_id), _opt_float(rates[0]), _opt_float(rates[1]), float(ts)]
    if extra:
        entry.extend(extra)
    win = state["window"]
    win.append(entry)
    if len(win) > window:
        del win[: len(win) - window]
    state["n_ratings"] = int(state["n_ratings"]) + 1
    remember(state, key, window)
    return True


def update_side(state: State, event_id: str, side: dict, window: int) -> bool:
    """Merge side-data fields into the state; False = duplicate event, unchanged."""
    key = SIDE + str(event_id)
    if is_duplicate(state, key):
        return False
    state["side"] = {**state["side"], **side}
    remember(state, key, window)
    return True


def set_vector(state: State, vector, model_version: str) -> list[float]:
    """Store the vector (rounded, plain floats) and return what was stored."""
    stored = rounded(vector)
    state["vector"] = stored
    state["model_version"] = model_version
    return stored


def rounded(values) -> list[float]:
    return [round(float(x), VECTOR_DECIMALS) for x in values]


def pack_vector(vector) -> str:
    """A vector as base64 of its float32 bytes: exact, and much smaller and faster in JSON than a list."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def unpack_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def unpack_vectors(texts, n_dim: int) -> np.ndarray:
    """[len(texts), n_dim]: many packed vectors decoded in one buffer."""
    return np.frombuffer(b"".join(base64.b64decode(t) for t in texts), dtype="<f4").reshape(-1, n_dim)


def window_columns(state: State) -> tuple[list[str], list[list[float | None]], list[float]]:
    """(other ids, rates [[stars, thumbs]], ts) of the window, oldest first."""
    win = state["window"]
    return [e[0] for e in win], [[e[1], e[2]] for e in win], [e[3] for e in win]


def in_window(state: State, other_id: str, rates, ts: float) -> bool:
    """Whether the window holds exactly this rating (other id, rates and time): a re-delivered event."""
    entry = [str(other_id), _opt_float(rates[0]), _opt_float(rates[1]), float(ts)]
    return any(e[:4] == entry for e in state["window"])


def rated_ids(state: State) -> set[str]:
    return {e[0] for e in state["window"]}


def _opt_float(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if x != x else x  # NaN -> None (JSON has no NaN)
