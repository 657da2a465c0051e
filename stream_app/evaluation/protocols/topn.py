"""Top-N protocol (METHOD.md): precision, recall and NDCG at n (default 10).

For every test user with at least one relevant held-out rating (stars >= `relevant_at`, 4 on
MovieLens), score every candidate item (all items the user did not rate in the training ratings),
take the n best and compare them with the relevant held-out items (binary gains). Systems are
scorers: `scores(user) -> [n_items]` on dense indices, higher is better; ranking uses unclipped
scores where a system has them, so clipping at the top of the scale does not create ties.
"""

from __future__ import annotations

import time

import numpy as np

from stream_app.data.dataset import RatingData, Split, group_rows
from stream_app.evaluation.tuning import BaselineSet, describe, prepare

POPULARITY_WEIGHTS = (0.0, 0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0)  # NAME+pop: on validation
VALIDATION_USERS = 1000  # users the popularity weight is chosen on (a seeded sample of the validation users)


def baseline_scorer(model):
    """Scorer of a fitted stream_app.baselines model (its unclipped `score` when it has one)."""
    score = getattr(model, "score", model.predict)

    def scores(user: int) -> np.ndarray:
        items = np.arange(model.n_items)
        return score(np.full(len(items), user), items)

    return scores


def training_counts(train: RatingData) -> np.ndarray:
    """Ratings per item in the training data (float64)."""
    return np.bincount(train.item, minlength=train.n_items).astype(np.float64)


def popularity_scorer(train: RatingData):
    """A non-personalised reference: items by their number of training ratings."""
    counts = training_counts(train)
    return lambda user: counts


def scoring_time(rec, ts: float | None = None) -> float:
    """The rating time top-N lists are scored at: ts, else the model's last training rating (0 without history)."""
    return float(ts if ts is not None else (rec.history.ts.max() if rec.history is not None else 0))


def served_stars(rec, ts: float | None = None):
    """Our predicted stars for every trained item, computed as the service computes them (clamped to the scale)."""
    when = scoring_time(rec, ts)
    items = rec.item_part(rec.vectors["item"], rec.features["item"])
    return lambda user: rec.score_items(items, rec.vectors["user"][user][None], rec.features["user"][user][None],
                                        [when])[0]


def aevec_scorer(rec, ts: float | None = None, popularity: bool = True):
    """Scorer of our model. popularity: rank as the service does (Recommender.rank_scores: predicted stars
    plus the popularity term); else the predictor's unclamped stars output alone."""
    if popularity:
        stars = served_stars(rec, ts)
        return lambda user: rec.rank_scores(stars(user), rec.item_counts)
    n_items = len(rec.vectors["item"])
    context = rec.schema.encode_context(np.full(n_items, scoring_time(rec, ts))).astype(np.float32)
    items_v, items_f = rec.vectors["item"], rec.features["item"]

    def stars_only(user: int) -> np.ndarray:
        uv = np.broadcast_to(rec.vectors["user"][user], (n_items, rec.n_dim))
        uf = np.broadcast_to(rec.features["user"][user], (n_items, rec.features["user"].shape[1]))
        return rec.net.predictor(uv, uf, items_v, items_f, context)[:, 0]

    return stars_only


def with_popularity(scorer, train: RatingData, weight: float):
    """Any scorer (in stars) ranked like our service ranks: + weight * ln(1 + the item's training ratings)."""
    from stream_app.core.foldin import popularity_ranked

    counts = training_counts(train)
    return lambda user: popularity_ranked(np.asarray(scorer(user), np.float64), counts, weight)


def evaluate_topn(scorers: dict, train: RatingData, test: RatingData, n: int = 10,
                  relevant_at: float = 4.0) -> dict:
    """{name: {"precision", "recall", "ndcg", "users", "n", "seconds"}} averaged over test users."""
    rated = _by_user(train.user, train.item, train.n_users)
    relevant_rows = test.rating >= relevant_at
    relevant = _by_user(test.user[relevant_rows], test.item[relevant_rows], test.n_users)
    users = [u for u, items in relevant.items() if len(items)]
    discounts = 1.0 / np.log2(np.arange(2, n + 2))
    out = {}
    for name, scores_of in scorers.items():
        started = time.perf_counter()
        precision, recall, ndcg = [], [], []
        for u in users:
            scores = np.asarray(scores_of(u), np.float64).copy()
            scores[rated.get(u, [])] = -np.inf
            k = min(n, int(np.isfinite(scores).sum()))
            top = np.argpartition(-scores, k - 1)[:k] if k else np.array([], np.int64)
            top = top[np.argsort(-scores[top], kind="stable")]
            hits = np.isin(top, relevant[u]).astype(np.float64)
            ideal = discounts[:min(n, len(relevant[u]))].sum()
            precision.append(hits.sum() / n)
            recall.append(hits.sum() / len(relevant[u]))
            ndcg.append(float((hits * discounts[:len(hits)]).sum() / ideal))
        out[name] = {"precision": float(np.mean(precision)) if users else float("nan"),
                     "recall": float(np.mean(recall)) if users else float("nan"),
                     "ndcg": float(np.mean(ndcg)) if users else float("nan"),
                     "users": len(users), "n": n, "relevant_at": relevant_at,
                     "seconds": time.perf_counter() - started}
    return out


def topn(split: Split, rec=None, baselines=None, n: int = 10, log=print) -> dict:
    """Our model ranked as served ("aevec": stars + popularity term) and by stars alone ("aevec-stars");
    each baseline by its scores and with the same popularity term ("NAME+pop"), so the term is not an
    advantage of ours alone; and popularity itself. baselines: a tuning.BaselineSet (hyperparameters,
    and each baseline's popularity weight, chosen on a validation split of the training ratings;
    rankers such as EASE included) or {name: factory} (popularity weight: our model's)."""
    from stream_app.core.config import ModelConfig

    weight = (rec.config if rec is not None else ModelConfig()).popularity_weight
    prepared = prepare(baselines, split.train, log)
    scorers = {"popularity": popularity_scorer(split.train)}  # the non-personalised reference
    if rec is not None:
        scorers["aevec"] = aevec_scorer(rec)
        scorers["aevec-stars"] = aevec_scorer(rec, popularity=False)
    for name, make in prepared.factories.items():
        log(f"topn: fitting {name}")
        scorers[name] = baseline_scorer(make().fit(split.train))
        w = weight
        if name in prepared.fitted:
            w, prepared.record[name]["popularity_weight"] = _tuned_weight(prepared, name, n, baselines.seed)
            log(f"topn: {name}+pop weight {w:g} (validation)")
        if w or name in prepared.fitted:
            scorers[f"{name}+pop"] = with_popularity(scorers[name], split.train, w)
    return {"protocol": "topn", "n": n, "popularity_weight": weight,
            "systems": evaluate_topn(scorers, split.train, split.test, n=n),
            **describe(split, prepared.record, baselines.seed if isinstance(baselines, BaselineSet) else None)}


def _tuned_weight(prepared, name: str, n: int, seed: int) -> tuple[float, dict]:
    """The popularity weight of NAME+pop with the best validation NDCG@n (the model fitted on the fit part)."""
    return tuned_popularity_weight(baseline_scorer(prepared.fitted[name]), prepared.validation.train,
                                   prepared.validation.test, n, seed)


def tuned_popularity_weight(base, fit: RatingData, valid: RatingData, n: int = 10, seed: int = 0
                            ) -> tuple[float, dict]:
    """The weight w of `base` + w ln(1 + training ratings of the item) with the best NDCG@n on `valid`
    (at most VALIDATION_USERS of its users, a seeded sample), and a record of the choice."""
    users = np.unique(valid.user)
    if len(users) > VALIDATION_USERS:
        users = np.random.default_rng(seed).choice(users, VALIDATION_USERS, replace=False)
        valid = valid.subset(np.isin(valid.user, users))
    scores = evaluate_topn({f"{w:g}": with_popularity(base, fit, w) for w in POPULARITY_WEIGHTS}, fit, valid, n=n)
    ndcg = {w: scores[w]["ndcg"] for w in scores}
    best = max(POPULARITY_WEIGHTS, key=lambda w: ndcg[f"{w:g}"])
    return best, {"source": "validation", "chosen": best, "metric": f"ndcg@{n}", "validation": ndcg,
                  "validation_users": int(len(users))}


def calibrate_popularity(rec, train: RatingData, valid: RatingData, n: int = 10) -> dict:
    """Set our model's popularity weight (how served lists rank) on validation ratings: the served
    stars plus w ln(1 + ratings), w with the best validation NDCG@n. For Trainer.fit(calibrate=...)."""
    w, record = tuned_popularity_weight(served_stars(rec), train, valid, n, rec.config.seed)
    rec.config.popularity_weight = w
    return {"popularity_weight": record}


def _by_user(user: np.ndarray, item: np.ndarray, n_users: int) -> dict[int, np.ndarray]:
    order, bounds = group_rows(user, n_users)
    return {u: item[order[bounds[u]:bounds[u + 1]]] for u in range(n_users) if bounds[u + 1] > bounds[u]}
