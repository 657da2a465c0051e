"""Splits the protocols make inside a dataset's training ratings: held-out entities for fold-in
and the first-k reveal of each held-out entity."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stream_app.data.dataset import RatingData


@dataclass
class HoldOut:
    side: str
    entities: np.ndarray  # held-out dense indices
    train: RatingData  # ratings of all other entities
    held: RatingData  # ratings of the held-out entities (time-ordered per entity on use)


def hold_out(data: RatingData, side: str, fraction: float = 0.1, min_ratings: int = 25,
             seed: int = 0) -> HoldOut:
    """Pick `fraction` of all `side` entities among those with >= min_ratings ratings."""
    entity = data.user if side == "user" else data.item
    n = data.n_users if side == "user" else data.n_items
    counts = np.bincount(entity, minlength=n)
    eligible = np.nonzero(counts >= min_ratings)[0]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(len(eligible), max(1, round(fraction * n))), replace=False)
    is_held = np.isin(entity, chosen)
    return HoldOut(side, np.sort(chosen), data.subset(~is_held), data.subset(is_held))


def reveal(held: HoldOut, k: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per held-out entity, the rows of its first k ratings in time order; and all other rows."""
    entity = held.held.user if held.side == "user" else held.held.item
    order = np.lexsort((held.held.ts, entity))  # by entity, then time
    revealed, rest = {}, []
    bounds = np.searchsorted(entity[order], np.append(held.entities, np.iinfo(np.int64).max))
    for j, e in enumerate(held.entities):
        rows = order[bounds[j]:bounds[j + 1]]
        revealed[int(e)] = rows[:k]
        rest.append(rows[k:])
    return revealed, np.concatenate(rest) if rest else np.array([], dtype=np.int64)


def concat(a: RatingData, b: RatingData) -> RatingData:
    """Ratings of a then b (both must share id maps, as subsets of one dataset do)."""
    return replace(a, user=np.concatenate([a.user, b.user]), item=np.concatenate([a.item, b.item]),
                   rating=np.concatenate([a.rating, b.rating]), ts=np.concatenate([a.ts, b.ts]))
