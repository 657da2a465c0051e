"""foldin-users / foldin-items: hold 10% of users (items) out of training entirely (or several
disjoint folds of them); reveal each one's first k ratings in time order; fold it in with the
frozen encoders; RMSE on the rest. Compared with baselines folded in from the same revealed ratings
(their `fold_in`), with paired bootstrap intervals of the RMSE differences."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation.metrics import paired_bootstrap_rmse, rating_metrics
from stream_app.evaluation.splits import HoldOut, concat, entity_folds, reveal
from stream_app.evaluation.tuning import BaselineSet, describe, prepare

if TYPE_CHECKING:
    from stream_app.core.foldin import Recommender

FOLDIN_KS = (1, 3, 5, 10, 20)


def foldin(split: Split, side: str, ks=FOLDIN_KS, train_ours: Callable | None = None, rec=None,
           baselines=None, retrain_ks=(), retrain_ours: bool = False, seed: int = 0, log=print,
           folds: int = 1, held_out: int | None = None, fraction: float = 0.1, n_boot: int = 1000) -> dict:
    """Hold `side` entities out; reveal each one's first k ratings; fold in; RMSE on the rest.

    folds: disjoint draws of held-out entities (splits.entity_folds), `held_out` entities each
    (default `fraction` of all); every fold trains its own models on its own training data, and the
    metrics pool the held-out ratings of all folds. With our model, each baseline's RMSE difference
    (ours minus it) gets a paired bootstrap 95% interval over the held-out entities ("intervals").
    rec: our model already trained on the held-out-free data (checked; one fold only); else `train_ours(data)`.
    baselines: a tuning.BaselineSet (hyperparameters chosen on a validation split of each fold's
    training data) or {name: factory}.
    retrain_ks: ks at which ALS (and ours with retrain_ours) is retrained on the training data plus
    every held-out entity's revealed ratings: the accuracy fold-in gives up by not retraining.
    """
    split.train.require_time(f"the fold-in protocol (each held-out {side}'s first k ratings in time order)")
    if rec is not None and folds > 1:
        raise ValueError("a given model can only be checked against one fold; let the protocol train one per fold")
    if isinstance(baselines, BaselineSet):
        baselines = baselines.without_rankers(f"foldin-{side}s")
    holds = entity_folds(split.train, side, folds, fraction, held_out, seed=seed)
    pooled: dict[int, dict] = {k: {"truth": [], "entity": [], "systems": {}} for k in ks}
    train_seconds: dict[str, float] = {}
    records = []  # each fold's hyperparameter choices
    for j, held in enumerate(holds):
        log(f"fold-in {side}s, fold {j + 1}/{len(holds)}: {len(held.entities)} held out ({len(held.held)} ratings); "
            f"training on the other {len(held.train)} ratings")
        fold_rec = rec
        if fold_rec is None and train_ours is not None:
            started = time.perf_counter()
            fold_rec = train_ours(held.train)
            train_seconds["aevec"] = train_seconds.get("aevec", 0.0) + time.perf_counter() - started
        if fold_rec is not None:
            _check_unseen(fold_rec, held)
        prepared = prepare(baselines, held.train, log)
        records.append(prepared.record)
        fitted = {name: make().fit(held.train) for name, make in prepared.factories.items()}
        for name, model in fitted.items():
            train_seconds[name] = train_seconds.get(name, 0.0) + model.train_seconds
        for k in ks:
            _fold_at_k(pooled[k], held, k, fold_rec, fitted, prepared.factories, train_ours,
                       retrain_ours and k in retrain_ks, k in retrain_ks, log)
    systems: dict[str, dict] = {}
    intervals: dict[str, dict] = {}
    for k in ks:
        truth, entity = np.concatenate(pooled[k]["truth"]), np.concatenate(pooled[k]["entity"])
        for name, parts in pooled[k]["systems"].items():
            pred = np.concatenate([p for p, _ in parts])
            systems.setdefault(name, {})[k] = {**rating_metrics(pred, truth), **_seconds(parts)}
        ours = pooled[k]["systems"].get("aevec-foldin")
        for name, parts in pooled[k]["systems"].items():
            if ours is not None and name != "aevec-foldin":
                intervals.setdefault(name, {})[k] = paired_bootstrap_rmse(
                    entity, np.concatenate([p for p, _ in ours]), np.concatenate([p for p, _ in parts]), truth,
                    n_boot=n_boot, seed=seed)
        log(f"k={k}: " + "  ".join(f"{s} {v[k]['rmse']:.4f}" for s, v in systems.items() if k in v))
    return {"protocol": f"foldin-{side}s", "folds": len(holds), "held_out": int(sum(len(h.entities) for h in holds)),
            "held_out_per_fold": [len(h.entities) for h in holds], "ks": list(ks), "retrain_ks": list(retrain_ks),
            "train_seconds": train_seconds, "systems": systems, "intervals": intervals,
            "intervals_about": "RMSE of aevec-foldin minus the system's, paired bootstrap over held-out "
                               f"{side}s ({n_boot} replicates, seed {seed}); negative = ours lower",
            **describe(split, records[0], seed), "hyperparameters_per_fold": records}


def _fold_at_k(acc: dict, held: HoldOut, k: int, rec, fitted: dict, factories: dict, train_ours,
               retrain_ours: bool, retrain_als: bool, log) -> None:
    """One fold at one k: every system's predictions of the held-out entities' other ratings, into `acc`."""
    revealed, rest = reveal(held, k)
    acc["truth"].append(held.held.rating[rest])
    acc["entity"].append((held.held.user if held.side == "user" else held.held.item)[rest])

    def add(name, pred, seconds=None):
        acc["systems"].setdefault(name, []).append((np.asarray(pred, np.float64), seconds))

    if rec is not None:
        add("aevec-foldin", foldin_predictions(rec, held, revealed, rest))
    for name, model in fitted.items():
        add(f"{name}-foldin", baseline_foldin_predictions(model, held, revealed, rest))
    if not (retrain_als or retrain_ours):
        return
    with_revealed = concat(held.train, held.held.subset(np.concatenate(list(revealed.values()))))
    rest_data = held.held.subset(rest)
    if retrain_als and "als-mf" in factories:
        log(f"k={k}: retraining als-mf on {len(with_revealed)} ratings")
        model = factories["als-mf"]().fit(with_revealed)
        add("als-mf-retrain", model.predict(rest_data.user, rest_data.item), model.train_seconds)
    if retrain_ours and train_ours is not None:
        from stream_app.core.bulk import predict_dataset

        log(f"k={k}: retraining aevec on {len(with_revealed)} ratings")
        started = time.perf_counter()
        retrained = train_ours(with_revealed)
        add("aevec-retrain", predict_dataset(retrained, rest_data), time.perf_counter() - started)


def _seconds(parts: list) -> dict:
    seconds = [s for _, s in parts if s is not None]
    return {"train_seconds": float(sum(seconds))} if seconds else {}


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
