"""The evaluation protocols of METHOD.md as functions shared by `recsys evaluate` and bench/accuracy.py.

Every protocol returns `{"protocol": NAME, "systems": {SYSTEM: {...metrics}}, ...}`; the fold-in
protocols key each system's metrics by k (revealed ratings per held-out entity). System names:
bias-only, als-mf, i-autorec, aevec (ours); fold-in variants bias-only-foldin, als-mf-foldin,
als-mf-retrain, i-autorec-foldin, aevec-foldin, aevec-retrain; topn adds popularity (most rated
items), the non-personalised reference. Outside peers (bench) add theirs.

Our model is passed in as a trained Recommender (or a `train(data) -> Recommender` callable where
the protocol needs a model trained on other data: fold-in and retrain); baselines are factories
`name -> fresh unfitted model`, so every protocol fits its own copies on its own training data.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from stream_app.baselines import ALSMF, BiasOnly, IAutoRec
from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation import (
    FOLDIN_KS,
    baseline_foldin_predictions,
    evaluate_baseline_warm,
    evaluate_warm,
    foldin_predictions,
    hold_out,
    rating_metrics,
    reveal,
)

BASELINES = ("bias-only", "als-mf", "i-autorec")


def baseline_factories(names=BASELINES, seed: int = 0, autorec: dict | None = None,
                       als: dict | None = None) -> dict[str, Callable]:
    known = {"bias-only": lambda: BiasOnly(),
             "als-mf": lambda: ALSMF(seed=seed, **(als or {})),
             "i-autorec": lambda: IAutoRec(seed=seed, **(autorec or {}))}
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(known)}")
    return {n: known[n] for n in names}


def concat(a: RatingData, b: RatingData) -> RatingData:
    """Ratings of a then b (both must share id maps, as subsets of one dataset do)."""
    return replace(a, user=np.concatenate([a.user, b.user]), item=np.concatenate([a.item, b.item]),
                   rating=np.concatenate([a.rating, b.rating]), ts=np.concatenate([a.ts, b.ts]))


# ---- warm ------------------------------------------------------------------------------------
def warm(split: Split, rec=None, baselines: dict | None = None, peers: dict | None = None, log=print) -> dict:
    """RMSE/MAE (and thumbs accuracy/AUC) on the test ratings; our model and baselines side by side.
    `peers`: name -> object with fit(train) and predict(user, item) (bench's outside systems)."""
    systems = {}
    if rec is not None:
        systems["aevec"] = evaluate_warm(rec, split.test)
        systems["aevec"]["model_version"] = rec.model_version
    for name, make in {**(baselines or {}), **(peers or {})}.items():
        log(f"warm: fitting {name} on {len(split.train)} ratings")
        model = make().fit(split.train)
        systems[name] = evaluate_baseline_warm(model, split.test)
    return {"protocol": "warm", "systems": systems}


# ---- fold-in ---------------------------------------------------------------------------------
def foldin(split: Split, side: str, ks=FOLDIN_KS, train_ours: Callable | None = None, rec=None,
           baselines: dict | None = None, retrain_ks=(), retrain_ours: bool = False, seed: int = 0,
           log=print) -> dict:
    """Hold 10% of `side` entities out; reveal each one's first k ratings; fold in; RMSE on the rest.

    rec: our model already trained on the held-out-free data (checked); else `train_ours(data)`.
    retrain_ks: ks at which ALS (and ours with retrain_ours) is retrained on the training data plus
    every held-out entity's revealed ratings: the accuracy fold-in gives up by not retraining.
    """
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


# ---- prequential -----------------------------------------------------------------------------
def prequential(split: Split, rec=None, baselines: dict | None = None, peers: list | None = None,
                chunk: int = 1, limit: int | None = None, window: int = 0, log=print) -> dict:
    """Predict-then-update over the test ratings in time order (stream_app.prequential).
    `peers`: extra stream systems (objects with name, predict(u, i, ts), update(u, i, r, ts))."""
    from stream_app.prequential import AEVecStream, BaselineStream, run_prequential

    systems = []
    if rec is not None:
        systems.append(AEVecStream(rec, split.train, window))
    for name, make in (baselines or {}).items():
        systems.append(BaselineStream(make().fit(split.train), split.train, name))
    systems.extend(peers or [])
    n = min(len(split.test), limit) if limit else len(split.test)
    log(f"prequential: {n} test ratings in time order, chunk {chunk}, systems {[s.name for s in systems]}")
    results = run_prequential(systems, split.test, chunk=chunk, limit=limit)
    return {"protocol": "prequential", "stream": n, "chunk": chunk, "window": window, "systems": results}


# ---- top-N -----------------------------------------------------------------------------------
def topn(split: Split, rec=None, baselines: dict | None = None, n: int = 10, log=print) -> dict:
    """Our model ranked as served ("aevec": stars + popularity term) and by stars alone ("aevec-stars");
    each baseline by its stars and with the same popularity term ("NAME+pop"), so the term is not an
    advantage of ours alone; and popularity itself."""
    from stream_app.core.config import ModelConfig
    from stream_app.topn import aevec_scorer, baseline_scorer, evaluate_topn, popularity_scorer, with_popularity

    weight = (rec.model.config if rec is not None else ModelConfig()).popularity_weight
    scorers = {"popularity": popularity_scorer(split.train)}  # the non-personalised reference
    if rec is not None:
        scorers["aevec"] = aevec_scorer(rec)
        scorers["aevec-stars"] = aevec_scorer(rec, popularity=False)
    for name, make in (baselines or {}).items():
        log(f"topn: fitting {name}")
        scorers[name] = baseline_scorer(make().fit(split.train))
        if weight:
            scorers[f"{name}+pop"] = with_popularity(scorers[name], split.train, weight)
    return {"protocol": "topn", "n": n, "popularity_weight": weight,
            "systems": evaluate_topn(scorers, split.train, split.test, n=n)}


# ---- plots -----------------------------------------------------------------------------------
def plot(result: dict, out) -> None:
    """Fold-in: RMSE vs k for every system; prequential: running RMSE; others: nothing to plot."""
    from stream_app.plots import plot_lines

    proto, systems = result["protocol"], result["systems"]
    if proto.startswith("foldin"):
        series = {}
        for name, by_k in systems.items():
            ks = sorted(int(k) for k in by_k)
            series[name] = (ks, [at_k(by_k, k)["rmse"] for k in ks])
        side = proto.split("-")[1].rstrip("s")
        plot_lines(series, out, f"revealed ratings per held-out {side}", "RMSE on the rest",
                   f"fold-in of new {side}s" + (" (quick)" if result.get("quick") else ""))
    elif proto == "prequential":
        series = {name: (m["curve"]["n"], m["curve"]["rmse"]) for name, m in systems.items()}
        plot_lines(series, out, "ratings streamed (time order)", "running RMSE",
                   "prequential: predict, then update" + (" (quick)" if result.get("quick") else ""), marker="")


def at_k(by_k: dict, k: int) -> dict | None:
    """A fold-in system's metrics at k (int keys, or str keys after a JSON round trip); None if absent."""
    return by_k[k] if k in by_k else by_k.get(str(k))
