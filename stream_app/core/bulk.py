"""Fold-in and prediction over whole datasets (training's freeze, evaluation): batched, as serving does."""

from __future__ import annotations

import math

import numpy as np

from stream_app.core.foldin import Recommender
from stream_app.data.dataset import RatingData


def fold_in_dataset(rec: Recommender, data: RatingData, side: str, batch: int = 512,
                    prior: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fold in every `side` entity of `data` from all its ratings. Returns (vectors, rating counts)."""
    entity = data.user if side == "user" else data.item
    other_entity = data.item if side == "user" else data.user
    n = len(rec.ids[side])
    order = np.argsort(entity, kind="stable")
    bounds = np.searchsorted(entity[order], np.arange(n + 1))
    vectors = rec.vectors[side].copy()
    count = np.diff(bounds)
    ids = np.nonzero(count)[0]
    for chunk in np.array_split(ids, max(1, math.ceil(len(ids) / batch))):
        sets = []
        for e in chunk:
            rows = order[bounds[e]:bounds[e + 1]]
            sets.append(rec.records_from_ratings(side, other_entity[rows], data.rating[rows], data.ts[rows]))
        keys = [rec.ids[side][e] for e in chunk]
        vectors[chunk] = rec.fold_in(side, sets, rec.features[side][chunk], entity_keys=keys, prior=prior)
    return vectors, count


def rmse_of(rec: Recommender, data: RatingData) -> float:
    pred = predict_dataset(rec, data)
    return float(np.sqrt(np.mean((pred - data.rating) ** 2)))


def predict_dataset(rec: Recommender, data: RatingData, batch: int = 65536) -> np.ndarray:
    out = np.empty(len(data), dtype=np.float32)
    for s in range(0, len(data), batch):
        u, i = data.user[s:s + batch], data.item[s:s + batch]
        out[s:s + batch] = rec.predict_rates(rec.vectors["user"][u], rec.features["user"][u],
                                             rec.vectors["item"][i], rec.features["item"][i],
                                             data.ts[s:s + batch])[:, 0]
    return out
