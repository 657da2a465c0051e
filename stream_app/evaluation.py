"""Evaluation protocols (METHOD.md), all systems measured the same way.

- warm: RMSE/MAE of an artifact on a split's test ratings.
  Also thumbs up/down (seed 004: 4-5 stars up, 1-3 down) accuracy and AUC of the thumbs head.
- foldin-users / foldin-items: hold 10% of users (items) out of training entirely; reveal each
  one's first k ratings in time order; fold it in with the frozen encoders; RMSE on the rest.
  Compared with baselines (stream_app.baselines) folded in from the same revealed ratings.
- prequential (stream_app.prequential) and topn (stream_app.topn) live in their own modules.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from stream_app.core.foldin import Recommender
from stream_app.data.dataset import RatingData

FOLDIN_KS = (1, 3, 5, 10, 20)


def rating_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    if not len(err):
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(len(err))}


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is empty."""
    score, label = np.asarray(score, np.float64), np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), np.float64)
    # average rank of each run of tied scores (ranks 1..n)
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(score)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def thumbs_metrics(prob_up: np.ndarray, stars: np.ndarray, up_at: float = 4.0, threshold: float = 0.5) -> dict:
    """Seed 004 thumbs: truth = stars >= up_at (4-5 up, 1-3 down); `prob_up` a score where higher
    means up (a probability, or predicted stars with threshold 3.5). Accuracy at `threshold`, AUC."""
    truth = np.asarray(stars) >= up_at
    prob_up = np.asarray(prob_up, np.float64)
    if not len(truth):
        return {"accuracy": float("nan"), "auc": float("nan"), "up_rate": float("nan"), "n": 0}
    return {"accuracy": float(np.mean((prob_up >= threshold) == truth)), "auc": auc(prob_up, truth),
            "up_rate": float(truth.mean()), "n": int(len(truth))}


def align(rec: Recommender, data: RatingData) -> tuple[np.ndarray, np.ndarray]:
    """Map a dataset's dense indices to the artifact's (-1 where the artifact never saw the id)."""
    maps = []
    for side in ("user", "item"):
        ids = data.user_ids if side == "user" else data.item_ids
        to_model = np.array([rec.index[side].get(raw, -1) for raw in ids], dtype=np.int64)
        maps.append(to_model[data.user if side == "user" else data.item])
    return maps[0], maps[1]


def predict_aligned(rec: Recommender, data: RatingData) -> np.ndarray:
    """Predicted stars for every rating of `data`; unseen users/items get cold-start vectors."""
    return predict_aligned_rates(rec, data)[:, 0]


def predict_aligned_rates(rec: Recommender, data: RatingData) -> np.ndarray:
    """[n, 2] predicted stars and thumbs-up probability for every rating of `data`."""
    user, item = align(rec, data)
    vecs, feats = {}, {}
    for side, idx, own in (("user", user, data.user), ("item", item, data.item)):
        encode = rec.schema.encode_user if side == "user" else rec.schema.encode_item
        side_dicts = data.users if side == "user" else data.items
        feats[side] = np.stack([rec.features[side][m] if m >= 0 else encode(side_dicts[o])
                                for m, o in zip(idx, own, strict=True)]) if len(idx) else \
            np.zeros((0, rec.model.dims[side]), np.float32)
        vecs[side] = np.where((idx >= 0)[:, None], rec.vectors[side][np.maximum(idx, 0)],
                              rec.model.cold_vectors(side, _tensor(feats[side])).detach().numpy())
    return rec.predict_rates(vecs["user"], feats["user"], vecs["item"], feats["item"], data.ts)


def evaluate_warm(rec: Recommender, test: RatingData) -> dict:
    """RMSE/MAE of the stars head and thumbs accuracy/AUC of the thumbs head on `test`."""
    started = time.perf_counter()
    rates = predict_aligned_rates(rec, test)
    metrics = rating_metrics(rates[:, 0], test.rating)
    metrics["thumbs"] = thumbs_metrics(rates[:, 1], test.rating, rec.schema.thumbs_threshold)
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def evaluate_baseline_warm(model, test: RatingData) -> dict:
    """RMSE/MAE of a fitted baseline; thumbs from its predicted stars (up when >= 3.5 on 1..5)."""
    started = time.perf_counter()
    pred = model.predict(test.user, test.item)
    metrics = rating_metrics(pred, test.rating)
    lo, hi = test.rating_scale
    metrics["thumbs"] = thumbs_metrics(pred, test.rating, lo + 0.75 * (hi - lo), lo + 0.625 * (hi - lo))
    metrics["thumbs"]["from"] = "predicted stars"
    metrics["seconds"] = time.perf_counter() - started
    metrics["train_seconds"] = getattr(model, "train_seconds", None)
    return metrics


# ---- fold-in protocol ------------------------------------------------------------------------
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


def foldin_predictions(rec: Recommender, held: HoldOut, revealed: dict[int, np.ndarray],
                       rest: np.ndarray) -> np.ndarray:
    """Fold each held-out entity in from its revealed ratings, then predict its other ratings."""
    side, data = held.side, held.held
    other_idx = data.item if side == "user" else data.user
    entities = list(revealed)
    sets = [rec.records_from_ratings(side, other_idx[rows], data.rating[rows], data.ts[rows])
            for rows in revealed.values()]
    vectors = rec.fold_in(side, sets, rec.features[side][entities], entity_keys=[rec.ids[side][e] for e in entities])
    saved = rec.vectors[side][entities].copy()
    rec.vectors[side][entities] = vectors
    try:
        pred = _predict_rows(rec, data, rest)
    finally:
        rec.vectors[side][entities] = saved
    return pred


def baseline_foldin_predictions(model, held: HoldOut, revealed: dict[int, np.ndarray],
                                rest: np.ndarray) -> np.ndarray:
    """Fold each held-out entity into a fitted baseline (stream_app.baselines) from its revealed
    ratings, then predict its other ratings. The baseline is modified in place."""
    data, side = held.held, held.side
    other_of = data.item if side == "user" else data.user
    for e, rows in revealed.items():
        model.fold_in(side, e, other_of[rows], data.rating[rows])
    return model.predict(data.user[rest], data.item[rest])


def _predict_rows(rec: Recommender, data: RatingData, rows: np.ndarray) -> np.ndarray:
    u, i = data.user[rows], data.item[rows]
    return rec.predict_rates(rec.vectors["user"][u], rec.features["user"][u], rec.vectors["item"][i],
                             rec.features["item"][i], data.ts[rows])[:, 0]


def _tensor(a: np.ndarray):
    import torch

    return torch.as_tensor(np.asarray(a, np.float32))
