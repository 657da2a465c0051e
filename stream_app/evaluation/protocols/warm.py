"""warm: RMSE/MAE of our model and the baselines on a split's test ratings, side by side.
Also thumbs up/down (seed 004: 4-5 stars up, 1-3 down) accuracy and AUC of the thumbs head."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation.metrics import rating_metrics, rmse_by_history, thumbs_metrics
from stream_app.evaluation.tuning import BaselineSet, describe, prepare

if TYPE_CHECKING:
    from stream_app.core.foldin import Recommender


def warm(split: Split, rec=None, baselines=None, peers: dict | None = None, log=print) -> dict:
    """RMSE/MAE (and thumbs accuracy/AUC) on the test ratings; our model and baselines side by side.
    baselines: a tuning.BaselineSet (hyperparameters chosen on a validation split of the training
    ratings) or {name: factory}. `peers`: name -> object with fit(train) and predict(user, item)
    (bench's outside systems)."""
    if isinstance(baselines, BaselineSet):
        baselines = baselines.without_rankers("warm")
    prepared = prepare(baselines, split.train, log)
    history = training_history(split)
    systems = {}
    if rec is not None:
        systems["aevec"] = evaluate_warm(rec, split.test, history)
        systems["aevec"]["model_version"] = rec.model_version
    for name, make in {**prepared.factories, **(peers or {})}.items():
        log(f"warm: fitting {name} on {len(split.train)} ratings")
        model = make().fit(split.train)
        systems[name] = evaluate_baseline_warm(model, split.test, history)
    return {"protocol": "warm", "systems": systems, **describe(split, prepared.record, _seed(baselines))}


def training_history(split: Split) -> dict[str, np.ndarray]:
    """Per test rating, how many training ratings its user and its item have (split.train and split.test share
    their indices)."""
    train, test = split.train, split.test
    return {"user": np.bincount(train.user, minlength=test.n_users)[test.user],
            "item": np.bincount(train.item, minlength=test.n_items)[test.item]}


def _by_history(pred: np.ndarray, truth: np.ndarray, history: dict | None) -> dict:
    """The test RMSE binned by the user's and by the item's training ratings (evaluation.metrics)."""
    if history is None:
        return {}
    return {f"by_{side}_history": rmse_by_history(pred, truth, counts) for side, counts in history.items()}


def _seed(baselines) -> int | None:
    return baselines.seed if isinstance(baselines, BaselineSet) else None


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
            np.zeros((0, rec.net.dims[side]), np.float32)
        vecs[side] = np.where((idx >= 0)[:, None], rec.vectors[side][np.maximum(idx, 0)],
                              rec.cold_vectors(side, feats[side]))
    return rec.predict_rates(vecs["user"], feats["user"], vecs["item"], feats["item"], data.ts)


def evaluate_warm(rec: Recommender, test: RatingData, history: dict | None = None) -> dict:
    """RMSE/MAE of the stars head and thumbs accuracy/AUC of the thumbs head on `test` (and, given each test
    rating's user and item `history` counts, the RMSE per bin of them)."""
    started = time.perf_counter()
    rates = predict_aligned_rates(rec, test)
    metrics = {**rating_metrics(rates[:, 0], test.rating), **_by_history(rates[:, 0], test.rating, history)}
    metrics["thumbs"] = thumbs_metrics(rates[:, 1], test.rating, rec.schema.thumbs_threshold)
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def evaluate_baseline_warm(model, test: RatingData, history: dict | None = None) -> dict:
    """RMSE/MAE of a fitted baseline; thumbs from its predicted stars (up when >= 3.5 on 1..5)."""
    started = time.perf_counter()
    pred = model.predict(test.user, test.item)
    metrics = {**rating_metrics(pred, test.rating), **_by_history(pred, test.rating, history)}
    lo, hi = test.rating_scale
    metrics["thumbs"] = thumbs_metrics(pred, test.rating, lo + 0.75 * (hi - lo), lo + 0.625 * (hi - lo))
    metrics["thumbs"]["from"] = "predicted stars"
    metrics["seconds"] = time.perf_counter() - started
    metrics["train_seconds"] = getattr(model, "train_seconds", None)
    return metrics
