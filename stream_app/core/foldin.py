"""The serving API: fold-in of users and items with the frozen encoders, prediction, top-N.

Nothing here takes a gradient step. An entity's vector is the mean of K codes of random
M-subsets of its ratings, corrected by the breathing map frozen at training time, then shrunk
toward its cold-start vector (from side data) as if that were `foldin_prior` extra ratings; an
entity with no ratings gets the cold-start vector itself. Sampling is seeded per entity (from the
seed and the entity's index), so a vector does not depend on which batch it was folded in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from stream_app.core.config import ModelConfig
from stream_app.core.inference import SIDES, FrozenNetworks, pack_record_sets


def popularity_ranked(stars: np.ndarray, item_counts: np.ndarray, weight: float) -> np.ndarray:
    """stars + weight * ln(1 + item_counts), a new array (how top-N lists rank; see ModelConfig.popularity_weight)."""
    return stars + weight * np.log1p(item_counts) if weight else np.array(stars, copy=True)


def other(side: str) -> str:
    return "item" if side == "user" else "user"


@dataclass
class History:
    """The training ratings, kept so that serving can exclude rated items and seed windows."""

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray


class Recommender:
    """Frozen model + trained entity vectors. All indices are dense model indices.

    `model`: the trained torch AEVecModel (kept as .model, for training's freezing step) or, as loaded from an
    artifact, FrozenNetworks alone (.model is None). Either way inference runs in numpy (.net, inference.py).
    """

    def __init__(self, model, schema, user_ids: list[str], item_ids: list[str],
                 user_vectors: np.ndarray, item_vectors: np.ndarray,
                 user_features: np.ndarray, item_features: np.ndarray,
                 history: History | None = None, model_version: str = "dev", seed: int = 0):
        if isinstance(model, FrozenNetworks):
            self.model, self.net = None, model
        else:
            self.model = model.eval()
            self.net = FrozenNetworks.from_torch(model)
        self.schema = schema
        self.model_version = model_version
        self.seed = seed
        self.ids = {"user": list(user_ids), "item": list(item_ids)}
        self.index = {side: {raw: i for i, raw in enumerate(self.ids[side])} for side in SIDES}
        self.vectors = {"user": np.asarray(user_vectors, np.float32), "item": np.asarray(item_vectors, np.float32)}
        self.features = {"user": np.asarray(user_features, np.float32),
                         "item": np.asarray(item_features, np.float32)}
        self.history = history
        self._rated: dict[int, np.ndarray] | None = None
        self._item_counts: tuple[object, np.ndarray] | None = None

    @property
    def item_counts(self) -> np.ndarray:
        """Training ratings per item (zeros without a history), for the popularity term of rankings."""
        if self._item_counts is None or self._item_counts[0] is not self.history:
            n = len(self.ids["item"])
            counts = (np.bincount(self.history.item, minlength=n).astype(np.float32) if self.history is not None
                      else np.zeros(n, np.float32))
            self._item_counts = (self.history, counts)
        return self._item_counts[1]

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    @property
    def n_dim(self) -> int:
        """Width of an ID vector: the code size N, one for the bias (with biases), the residual factor's rank."""
        return self.net.vector_dim

    # ---- records -------------------------------------------------------------------------
    def records(self, side: str, other_vectors: np.ndarray, other_features: np.ndarray,
                ts: np.ndarray, rates: np.ndarray) -> np.ndarray:
        """Records describing one `side` entity: one row per rating, [other vec, other data, context, rates]."""
        context = self.schema.encode_context(np.asarray(ts))
        rates = np.nan_to_num(np.asarray(rates, np.float32).reshape(len(context), -1))
        return np.concatenate([other_vectors, other_features, context, rates], axis=1).astype(np.float32)

    def records_from_ratings(self, side: str, other_index: np.ndarray, stars: np.ndarray,
                             ts: np.ndarray) -> np.ndarray:
        """Records for ratings against known entities of the other side, with their trained vectors."""
        o = other(side)
        other_index = np.asarray(other_index, np.int64)
        rates = self.schema.encode_rates(np.asarray(stars, np.float32))
        return self.records(side, self.vectors[o][other_index], self.features[o][other_index], ts, rates)

    # ---- fold-in ---------------------------------------------------------------------------
    def fold_in(self, side: str, record_sets: list[np.ndarray], side_data: np.ndarray,
                entity_keys: list[int | str] | None = None, seed: int | None = None,
                prior: float | None = None) -> np.ndarray:
        """Vectors [B, N] for B entities from their records (one [n_b, D] array each).

        side_data: [B, user_dim or item_dim] encoded side data (cold start when n_b == 0).
        entity_keys: ints or strs (e.g. raw ids) that seed each entity's sampling (default: batch position).
        prior: pseudo-rating weight of the cold-start vector (default: the config's foldin_prior).
        """
        b = len(record_sets)
        out = self.cold_vectors(side, np.asarray(side_data, np.float32).reshape(b, -1))
        records, start, count = pack_record_sets(record_sets)
        has = count > 0
        if has.any():
            keys = list(range(b)) if entity_keys is None else list(entity_keys)
            seed = self.seed if seed is None else seed
            seeds = [entity_seed(seed, side, keys[i]) for i in np.flatnonzero(has).tolist()]
            out[has] = self.net.fold_in(side, records, start[has], count[has], seeds, out[has], prior,
                                        data=np.asarray(side_data, np.float32).reshape(b, -1)[has])
        return out

    def cold_vectors(self, side: str, side_data: np.ndarray) -> np.ndarray:
        """Cold-start vectors [B, N] from encoded side data [B, user_dim or item_dim]."""
        return self.net.cold_vectors(side, np.asarray(side_data, np.float32)).astype(np.float32, copy=False)

    def cold_vector(self, side: str, side_dict: dict) -> np.ndarray:
        encode = self.schema.encode_user if side == "user" else self.schema.encode_item
        return self.cold_vectors(side, np.asarray(encode(side_dict), np.float32).reshape(1, -1))[0]

    def vector_for_user(self, item_ids: list[str], ratings: list[float], ts: list[float],
                        side: dict | None = None, user_id: str | None = None) -> np.ndarray:
        """One user's vector from its recent ratings of known items (raw ids) and side data."""
        return self._vector_for("user", item_ids, ratings, ts, side, user_id)

    def vector_for_item(self, user_ids: list[str], ratings: list[float], ts: list[float],
                        side: dict | None = None, item_id: str | None = None) -> np.ndarray:
        return self._vector_for("item", user_ids, ratings, ts, side, item_id)

    def _vector_for(self, side, other_ids, ratings, ts, side_dict, own_id) -> np.ndarray:
        o = other(side)
        unknown = [x for x in other_ids if str(x) not in self.index[o]]
        if unknown:
            raise KeyError(f"unknown {o} ids: {unknown[:5]}")
        idx = np.array([self.index[o][str(x)] for x in other_ids], dtype=np.int64)
        recs = self.records_from_ratings(side, idx, np.asarray(ratings, np.float32), np.asarray(ts))
        encode = self.schema.encode_user if side == "user" else self.schema.encode_item
        data = encode(side_dict or {}) if side_dict is not None or own_id is None else \
            self.features[side][self.index[side][str(own_id)]]
        key = str(own_id) if own_id is not None else 0
        return self.fold_in(side, [recs], np.asarray(data)[None], entity_keys=[key])[0]

    # ---- prediction --------------------------------------------------------------------------
    def predict_rates(self, user_vecs, user_data, item_vecs, item_data, ts) -> np.ndarray:
        """[B, 2]: predicted stars (on the rating scale) and thumbs-up probability."""
        context = self.schema.encode_context(np.asarray(ts))
        raw = self.net.predictor(*(_f32(a) for a in (user_vecs, user_data, item_vecs, item_data, context)))
        stars = self.schema.decode_stars(np.clip(raw[:, 0], -1, 1))
        return np.stack([stars, 1.0 / (1.0 + np.exp(-raw[:, 1]))], axis=1)

    def item_part(self, item_vecs: np.ndarray, item_data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What scoring these items needs once (see score_items): (item vectors, their first-layer share)."""
        vecs = _f32(item_vecs)
        return vecs, self.net.predictor.item_part(vecs, _f32(item_data))

    def score_items(self, items: tuple[np.ndarray, np.ndarray], user_vecs, user_data, ts) -> np.ndarray:
        """[B, n_items] predicted stars of every item (`items` from item_part) for B users at times ts [B];
        the same numbers as predict_rates()[:, 0] on every pair, with the item side computed once."""
        vecs, part = items
        raw = self.net.predictor.score_items(part, vecs, _f32(user_vecs), _f32(user_data),
                                             _f32(self.schema.encode_context(np.asarray(ts))))
        return self.schema.decode_stars(np.clip(raw[..., 0], -1, 1))

    def score_pairs(self, items: tuple[np.ndarray, np.ndarray], rows: np.ndarray, owner: np.ndarray, user_vecs,
                    user_data, ts) -> np.ndarray:
        """[P] predicted stars of the pairs (user owner[p], item rows[p]) for B users at times ts [B] (`items`
        from item_part over a catalogue): predict_rates()[:, 0] of those pairs, the item side computed once."""
        vecs, part = items
        raw = self.net.predictor.score_pairs(part[rows], vecs[rows], _f32(user_vecs), _f32(user_data),
                                             _f32(self.schema.encode_context(np.asarray(ts))), owner)
        return self.schema.decode_stars(np.clip(raw[:, 0], -1, 1))

    def predict(self, user: int, items: np.ndarray, ts: float | None = None,
                user_vector: np.ndarray | None = None, user_data: np.ndarray | None = None) -> np.ndarray:
        """Predicted stars of known items for a known user (or a folded-in vector)."""
        items = np.atleast_1d(np.asarray(items, np.int64))
        uv = self.vectors["user"][user] if user_vector is None else user_vector
        ud = self.features["user"][user] if user_data is None else user_data
        ts = np.full(len(items), _now() if ts is None else ts)
        return self.predict_rates(np.broadcast_to(uv, (len(items), self.n_dim)),
                                  np.broadcast_to(ud, (len(items), len(ud))),
                                  self.vectors["item"][items], self.features["item"][items], ts)[:, 0]

    def rank_scores(self, stars: np.ndarray, item_counts: np.ndarray) -> np.ndarray:
        """What top-N lists rank by: predicted stars + popularity_weight * ln(1 + ratings of the item)."""
        return popularity_ranked(stars, item_counts, self.config.popularity_weight)

    def top_n(self, stars: np.ndarray, item_counts: np.ndarray, n: int,
              exclude: np.ndarray | set | None = None) -> list[tuple[int, float]]:
        """The n best (item row, predicted stars) by rank_scores, skipping the rows in `exclude`."""
        scores = self.rank_scores(stars, item_counts)
        if exclude is not None and len(exclude):
            scores[np.fromiter(exclude, dtype=np.int64)] = -np.inf
        n = min(n, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, n - 1)[:n] if n else np.array([], dtype=np.int64)
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(stars[i])) for i in top]

    def recommend(self, user_vector: np.ndarray, user_data: np.ndarray, n: int = 10,
                  exclude: np.ndarray | set | None = None, ts: float | None = None,
                  item_vectors: np.ndarray | None = None, item_features: np.ndarray | None = None,
                  item_counts: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-n (item row, predicted stars) over the items (default: the trained ones; a server
        passes its live catalogue's arrays), skipping the rows in `exclude`."""
        vectors = self.vectors["item"] if item_vectors is None else item_vectors
        features = self.features["item"] if item_features is None else item_features
        counts = self.item_counts if item_counts is None else item_counts
        stars = self.score_items(self.item_part(vectors, features), np.asarray(user_vector)[None],
                                 np.asarray(user_data)[None], [_now() if ts is None else ts])[0]
        return self.top_n(stars, counts, n, exclude)

    def recommend_for(self, user: int, n: int = 10, exclude_rated: bool = True) -> list[tuple[int, float]]:
        exclude = self.rated_items(user) if exclude_rated else None
        return self.recommend(self.vectors["user"][user], self.features["user"][user], n, exclude)

    def rated_items(self, user: int) -> np.ndarray:
        if self.history is None:
            return np.array([], dtype=np.int64)
        if self._rated is None:
            order = np.argsort(self.history.user, kind="stable")
            bounds = np.searchsorted(self.history.user[order], np.arange(len(self.ids["user"]) + 1))
            items = self.history.item[order]
            self._rated = {u: items[bounds[u]:bounds[u + 1]] for u in range(len(self.ids["user"]))}
        return self._rated.get(user, np.array([], dtype=np.int64))


def entity_seed(seed: int, side: str, key: int | str) -> int:
    """A stable 63-bit seed for one entity's sampling (str keys hashed without Python's salt)."""
    if isinstance(key, str):
        key = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    x = (int(key) ^ _mix(int(seed) * 2 + SIDES.index(side))) & _U64
    return _mix(x) >> 1


_U64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """SplitMix64's step on a Python int: nearby inputs give unrelated outputs."""
    x = (x + 0x9E3779B97F4A7C15) & _U64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _U64
    return x ^ (x >> 31)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


def _now() -> float:
    import time

    return time.time()
