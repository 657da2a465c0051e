"""Splits the protocols make inside a dataset's training ratings: the validation split every
hyperparameter is chosen on, held-out entities for fold-in (one draw, or disjoint folds) and the
first-k reveal of each held-out entity."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from stream_app.data.dataset import RatingData, Split, group_rows, random_split

VALIDATION_FRACTION = 0.1


@dataclass
class HoldOut:
    side: str
    entities: np.ndarray  # held-out dense indices
    train: RatingData  # ratings of all other entities
    held: RatingData  # ratings of the held-out entities (time-ordered per entity on use)


def validation_split(train: RatingData, fraction: float = VALIDATION_FRACTION, seed: int = 0) -> Split:
    """A seeded random `fraction` of the training ratings carved out for choosing hyperparameters
    (never the test ratings): Split(fit part, validation part)."""
    split = random_split(train, fraction, seed)
    return Split(split.train, split.test, name=f"validation{round(fraction * 100)}-s{seed}")


def hold_out(data: RatingData, side: str, fraction: float = 0.1, min_ratings: int = 25,
             seed: int = 0) -> HoldOut:
    """Pick `fraction` of all `side` entities among those with >= min_ratings ratings."""
    eligible, n = _eligible(data, side, min_ratings)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(eligible, size=min(len(eligible), max(1, round(fraction * n))), replace=False)
    return _held(data, side, chosen)


def entity_folds(data: RatingData, side: str, folds: int = 1, fraction: float = 0.1, held_out: int | None = None,
                 min_ratings: int = 25, seed: int = 0) -> list[HoldOut]:
    """`folds` disjoint draws of held-out `side` entities (each a HoldOut with its own training data).

    Each fold holds out `held_out` entities (default: `fraction` of all of them), among those with
    >= min_ratings ratings, at most an equal share of the eligible ones. folds=1 is `hold_out`."""
    if folds < 1:
        raise ValueError("folds must be >= 1")
    eligible, n = _eligible(data, side, min_ratings)
    per_fold = held_out if held_out is not None else max(1, round(fraction * n))
    if folds == 1 and held_out is None:
        return [hold_out(data, side, fraction, min_ratings, seed)]
    per_fold = min(per_fold, len(eligible) // folds)
    if per_fold < 1:
        raise ValueError(f"{len(eligible)} {side}s have >= {min_ratings} ratings: too few for {folds} folds")
    drawn = np.random.default_rng(seed).permutation(eligible)
    return [_held(data, side, drawn[j * per_fold:(j + 1) * per_fold]) for j in range(folds)]


def reveal(held: HoldOut, k: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per held-out entity, the rows of its first k ratings in time order; and all other rows."""
    entity = held.held.user if held.side == "user" else held.held.item
    by_time = held.held.time_order()
    order, bounds = group_rows(entity[by_time], int(held.entities.max(initial=-1)) + 1)
    revealed, rest = {}, []
    for e in held.entities:
        rows = by_time[order[bounds[e]:bounds[e + 1]]]
        revealed[int(e)] = rows[:k]
        rest.append(rows[k:])
    return revealed, np.concatenate(rest) if rest else np.array([], dtype=np.int64)


def _eligible(data: RatingData, side: str, min_ratings: int) -> tuple[np.ndarray, int]:
    entity = data.user if side == "user" else data.item
    n = data.n_users if side == "user" else data.n_items
    return np.nonzero(np.bincount(entity, minlength=n) >= min_ratings)[0], n


def _held(data: RatingData, side: str, chosen: np.ndarray) -> HoldOut:
    is_held = np.isin(data.user if side == "user" else data.item, chosen)
    return HoldOut(side, np.sort(chosen), data.subset(~is_held), data.subset(is_held))


def concat(a: RatingData, b: RatingData) -> RatingData:
    """Ratings of a then b (both must share id maps, as subsets of one dataset do)."""
    return replace(a, user=np.concatenate([a.user, b.user]), item=np.concatenate([a.item, b.item]),
                   rating=np.concatenate([a.rating, b.rating]), ts=np.concatenate([a.ts, b.ts]))
