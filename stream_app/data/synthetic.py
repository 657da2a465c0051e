"""A MovieLens-like rating generator with planted latent structure, for tests and demos.

rating = clip(round(3.5 + user_bias + item_bias + <user_factors, item_factors> + noise), 1, 5).
Side data uses the MovieLens vocabulary and is derived from the planted factors (gender from the
sign of factor 0, age from factor 1, occupation and genres from random projections, year from
factor 2), so predicting cold-start vectors from side data has something real to find.
"""

from __future__ import annotations

import numpy as np

from stream_app.data.dataset import RatingData

OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)
GENRES = (
    "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
START_TS = 1_577_836_800  # 2020-01-01 UTC
YEAR_SECONDS = 365 * 86400
FACTOR_SCALE = 0.6  # with the biases and noise, gives ratings of mean ~3.5 and std ~1


def make_synthetic(n_users: int = 600, n_items: int = 400, n_factors: int = 4,
                   mean_ratings_per_user: float = 40, noise: float = 0.35, seed: int = 0) -> RatingData:
    rng = np.random.default_rng(seed)
    user_factors = rng.normal(0.0, FACTOR_SCALE, (n_users, n_factors))
    item_factors = rng.normal(0.0, FACTOR_SCALE, (n_items, n_factors))
    user_bias = rng.normal(0.0, 0.35, n_users)
    item_bias = rng.normal(0.0, 0.45, n_items)

    user, item = _sample_pairs(rng, n_users, n_items, mean_ratings_per_user)
    raw = (3.5 + user_bias[user] + item_bias[item] + np.sum(user_factors[user] * item_factors[item], axis=1)
           + rng.normal(0.0, noise, len(user)))
    rating = np.clip(np.round(raw), 1, 5)
    ts = _timestamps(rng, user, n_users)
    order = np.argsort(ts, kind="stable")  # rows in time order, like a replayable log

    return RatingData(
        name="synthetic",
        user=user[order],
        item=item[order],
        rating=rating[order],
        ts=ts[order],
        user_ids=[str(u + 1) for u in range(n_users)],
        item_ids=[str(i + 1) for i in range(n_items)],
        users=_user_side(rng, user_factors),
        items=_item_side(rng, item_factors),
        rating_scale=(1.0, 5.0),
        extras={"user_factors": user_factors, "item_factors": item_factors,
                "user_bias": user_bias, "item_bias": item_bias},
    )


# Below this many user x item Gumbel keys, users are sampled one by one with a full-catalogue Gumbel
# top-k (the original sampler: same data for a given seed as before); above it, in batches (memory and
# time proportional to the ratings). Both draw each user's items by successive sampling without
# replacement with probability proportional to popularity: the same distribution.
GUMBEL_KEYS = 1 << 25
_ROUNDS = 8  # batched rounds before the few users still short of items finish with a Gumbel top-k


def _sample_pairs(rng: np.random.Generator, n_users: int, n_items: int,
                  mean_per_user: float) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs: heavy-tailed activity per user and popularity per item."""
    sigma = 1.0  # lognormal spread: many light users, a few heavy ones
    activity = rng.lognormal(np.log(mean_per_user) - sigma**2 / 2, sigma, n_users)
    counts = np.clip(np.round(activity), 1, max(1, int(0.6 * n_items))).astype(np.int64)
    popularity = rng.lognormal(0.0, 1.5, n_items)
    log_pop = np.log(popularity / popularity.sum())
    if n_users * n_items <= GUMBEL_KEYS:
        items = [_gumbel_top(rng, log_pop, count) for count in counts]
        return np.repeat(np.arange(n_users), counts), np.concatenate(items).astype(np.int64)
    return _sample_batched(rng, counts, log_pop)


def _gumbel_top(rng: np.random.Generator, log_pop: np.ndarray, count: int) -> np.ndarray:
    """A weighted sample of `count` items without replacement (Gumbel top-k); -inf keys are never drawn.
    A copy, so the full-catalogue key and index arrays are freed at once."""
    keys = log_pop + rng.gumbel(size=len(log_pop))
    return np.argpartition(-keys, count - 1)[:count].copy()


def _sample_batched(rng: np.random.Generator, counts: np.ndarray, log_pop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's first `count` distinct items of an i.i.d. popularity-weighted stream, drawn in
    rounds: each round draws every user's missing number of items and keeps the new distinct ones.
    Memory is a few arrays of the number of ratings (no user x catalogue array)."""
    n_users, n_items = len(counts), len(log_pop)
    cdf = np.cumsum(np.exp(log_pop - log_pop.max()))
    chosen = np.empty(0, np.int64)  # sorted keys user * n_items + item
    need = counts.copy()
    for _ in range(_ROUNDS):
        active = np.flatnonzero(need)
        if not len(active):
            break
        user = np.repeat(active, need[active])
        item = np.minimum(np.searchsorted(cdf, rng.random(len(user)) * cdf[-1], side="right"), n_items - 1)
        chosen = _sorted_unique(np.concatenate([chosen, user * n_items + item]))  # repeats fall together
        del user, item
        need = counts - np.bincount(chosen // n_items, minlength=n_users)
    short = np.flatnonzero(need)
    if len(short):  # finish with a Gumbel top-k over each one's items not yet drawn (the same conditional law)
        starts = np.searchsorted(chosen, short * n_items)
        extra = []
        for u, start in zip(short.tolist(), starts.tolist(), strict=True):
            has = chosen[start:start + counts[u] - need[u]] - u * n_items
            masked = log_pop.copy()
            masked[has] = -np.inf
            extra.append(u * n_items + _gumbel_top(rng, masked, int(need[u])))
        chosen = _sorted_unique(np.concatenate([chosen, *extra]))
    return chosen // n_items, chosen % n_items


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """np.unique by sorting in place (numpy 2's hash-based unique is many times slower on int64 keys here)."""
    keys.sort()
    return keys[np.r_[True, keys[1:] != keys[:-1]]] if len(keys) else keys


def _timestamps(rng: np.random.Generator, user: np.ndarray, n_users: int) -> np.ndarray:
    """Each user joins at a random time in the year and rates until its end, in time order."""
    joined = START_TS + rng.uniform(0, 0.8 * YEAR_SECONDS, n_users)
    ts = joined[user] + rng.uniform(0, 1, len(user)) * (START_TS + YEAR_SECONDS - joined[user])
    return ts.astype(np.int64)


def _user_side(rng: np.random.Generator, factors: np.ndarray) -> list[dict]:
    n, k = factors.shape
    z = factors / FACTOR_SCALE  # ~ standard normal
    gender = np.where(z[:, 0] + rng.normal(0, 0.3, n) > 0, "M", "F")
    age = np.clip(np.round(33 + 11 * z[:, 1 % k] + rng.normal(0, 3, n)), 7, 75).astype(int)
    occupation = _argmax_projection(rng, z, len(OCCUPATIONS))
    return [{"gender": str(g), "age": int(a), "occupation": OCCUPATIONS[o]}
            for g, a, o in zip(gender, age, occupation, strict=True)]


def _item_side(rng: np.random.Generator, factors: np.ndarray) -> list[dict]:
    n, k = factors.shape
    z = factors / FACTOR_SCALE
    year = np.clip(np.round(1990 + 9 * z[:, 2 % k] + rng.normal(0, 2, n)), 1920, 2020).astype(int)
    genre_bias = rng.normal(0, 0.5, len(GENRES))  # some genres are more common than others
    directions = rng.normal(0, 1, (k, len(GENRES))) / np.sqrt(k)
    scores = z @ directions + genre_bias + rng.normal(0, 0.5, (n, len(GENRES)))
    has_genre = scores > 1.6  # ~2 genres per item...
    has_genre[np.arange(n), scores.argmax(axis=1)] = True  # ...and never none
    return [{"title": f"Synthetic Movie {i + 1} ({y})", "year": int(y),
             "genres": [GENRES[g] for g in np.flatnonzero(has_genre[i])]}
            for i, y in enumerate(year)]


def _argmax_projection(rng: np.random.Generator, z: np.ndarray, n_classes: int) -> np.ndarray:
    """Class = argmax of a random linear projection of the factors plus a little noise."""
    scores = z @ rng.normal(0, 1, (z.shape[1], n_classes)) + rng.gumbel(0, 0.5, (len(z), n_classes))
    return scores.argmax(axis=1)
