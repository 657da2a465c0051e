"""foldin-users / foldin-items: hold 10% of users (items) out of training entirely; reveal each
one's first k ratings in time order; fold it in with the frozen encoders; RMSE on the rest.
Compared with baselines folded in from the same revealed ratings (their `fold_in`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation.metrics import rating_metrics
from stream_app.evaluation.splits import HoldOut, concat, hold_out, reveal

if TYPE_CHECKING:
    from stream_app.core.foldin import Recommender

FOLDIN_KS = (1, 3, 5, 10, 20)


def foldin(split: Split, side: str, ks=FOLDIN_KS, train_ours: Callable | None = None, rec=None,
           baselines: dict | None = None, retrain_ks=(), retrain_ours: bool = False, seed: int = 0,
           log=print) -> dict:
    """Hold 10% of `side` entities out; reveal each one's first k ratings; fold in; RMSE on the rest.

    rec: our model already trained on the held-out-free data (checked); else `train_ours(data)`.
    retrain_ks: ks at which ALS (and ours with retrain_ours) is retrained on the training data plus
    every held-out entity's revealed ratings: the accuracy fold-in gives up by not retraining.
    """
    split.train.require_time(f"the fold-in protocol (each held-out {side}'s first k ratings in time order)")
    held = hold_out(split.train, side, seed=seed)
    log(f"fold-in {side}s: {len(held.entities)} held out ({len(held.held)} ratings); "
        f"training on the other {len(held.train)} ratings")
    train_seconds = {}
    if rec is None and train_ours is not None:
        started = time.perf_counter()
        rec = train_ours(held.train)
        train_seconds["aevec"] = time.perf_counter() - started
    if rec is not None:
        _check_unseen(rec, held)
    fitted = {}
    for name, make in (baselines or {}).items():
        fitted[name] = make().fit(held.train)
        train_seconds[name] = fitted[name].train_seconds
    systems: dict[str, dict] = {}
    for k in ks:
        revealed, rest = reveal(held, k)
        truth = held.held.rating[rest]
        if rec is not None:
            systems.setdefault("aevec-foldin", {})[k] = rating_metrics(foldin_predictions(rec, held, revealed, rest),
                                                                       truth)
        for name, model in fitted.items():
            pred = baseline_foldin_predictions(model, held, revealed, rest)
            systems.setdefault(f"{name}-foldin", {})[k] = rating_metrics(pred, truth)
        if k in retrain_ks:
            with_revealed = concat(held.train, held.held.subset(np.concatenate(list(revealed.values()))))
            rest_data = held.held.subset(rest)
            if "als-mf" in (baselines or {}):
                log(f"k={k}: retraining als-mf on {len(with_revealed)} ratings")
                model = baselines["als-mf"]().fit(with_revealed)
                systems.setdefault("als-mf-retrain", {})[k] = {
                    **rating_metrics(model.predict(rest_data.user, rest_data.item), truth),
                    "train_seconds": model.train_seconds}
            if retrain_ours and train_ours is not None:
                log(f"k={k}: retraining aevec on {len(with_revealed)} ratings")
                started = time.perf_counter()
                retrained = train_ours(with_revealed)
                seconds = time.perf_counter() - started
                from stream_app.core.training import predict_dataset

                systems.setdefault("aevec-retrain", {})[k] = {
                    **rating_metrics(predict_dataset(retrained, rest_data), truth), "train_seconds": seconds}
        log(f"k={k}: " + "  ".join(f"{s} {v[k]['rmse']:.4f}" for s, v in systems.items() if k in v))
    return {"protocol": f"foldin-{side}s", "held_out": len(held.entities), "ks": list(ks),
            "retrain_ks": list(retrain_ks), "train_seconds": train_seconds, "systems": systems}


def _check_unseen(rec, held) -> None:
    """Refuse a model that saw ratings of held-out entities (its fold-in numbers would be leaks)."""
    if rec.history is None:
        return
    side_ids = np.array(rec.ids[held.side], dtype=object)
    held_ids = set(np.array(held.train.user_ids if held.side == "user" else held.train.item_ids,
                            dtype=object)[held.entities].tolist())
    seen = set(side_ids[rec.history.user if held.side == "user" else rec.history.item].tolist())
    if seen & held_ids:
        raise ValueError(f"the model was trained on ratings of {len(seen & held_ids)} held-out {held.side}s; "
                         "fold-in needs a model trained without them (let the protocol train one)")


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


def at_k(by_k: dict, k: int) -> dict | None:
    """A fold-in system's metrics at k (int keys, or str keys after a JSON round trip); None if absent."""
    return by_k[k] if k in by_k else by_k.get(str(k))
