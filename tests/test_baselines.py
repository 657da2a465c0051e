"""Baselines: ALS recovers planted structure; its fold-in is the same ridge solve as training."""

import numpy as np

from stream_app.baselines import ALSMF, BiasOnly, IAutoRec
from stream_app.data.dataset import random_split
from stream_app.data.synthetic import make_synthetic
from stream_app.evaluation import rating_metrics


def test_als_beats_bias_only_on_planted_factors():
    split = random_split(make_synthetic(n_users=300, n_items=200, seed=2), 0.1, 0)
    bias = BiasOnly().fit(split.train)
    als = ALSMF(factors=8, reg=2.0, iterations=10).fit(split.train)
    t = split.test
    rmse_bias = rating_metrics(bias.predict(t.user, t.item), t.rating)["rmse"]
    rmse_als = rating_metrics(als.predict(t.user, t.item), t.rating)["rmse"]
    assert rmse_als < 0.9 * rmse_bias, (rmse_als, rmse_bias)
    assert als.train_seconds > 0 and bias.train_seconds >= 0


def test_als_fold_in_reproduces_the_training_solve():
    data = make_synthetic(n_users=120, n_items=80, seed=4)
    als = ALSMF(factors=4, iterations=6).fit(data)
    rows = np.nonzero(data.user == 5)[0]
    before = als.p[5].copy(), float(als.bu[5])
    als.p[5], als.bu[5] = 0.0, 0.0
    als.fold_in("user", 5, data.item[rows], data.rating[rows])
    # The last sweep solved items after users, so the refit differs slightly but stays close.
    assert np.corrcoef(als.p[5], before[0])[0, 1] > 0.9
    assert abs(als.bu[5] - before[1]) < 0.2


def test_bias_fold_in_moves_only_the_folded_entity():
    data = make_synthetic(n_users=60, n_items=40, seed=1)
    bias = BiasOnly().fit(data)
    items = bias.bi.copy()
    bias.fold_in("user", 3, np.array([0, 1, 2]), np.array([5.0, 5.0, 5.0]))
    assert bias.bu[3] > 0 and np.array_equal(items, bias.bi)


# ---- I-AutoRec -------------------------------------------------------------------------------
def _autorec(**kw):
    return IAutoRec(hidden=32, l2=1.0, epochs=40, batch_size=32, lr=1e-2, **kw)


def test_i_autorec_learns_planted_structure_and_reports_training_time():
    split = random_split(make_synthetic(n_users=200, n_items=120, seed=2), 0.1, 0)
    autorec = _autorec().fit(split.train)
    bias = BiasOnly().fit(split.train)
    t = split.test
    rmse_ar = rating_metrics(autorec.predict(t.user, t.item), t.rating)["rmse"]
    rmse_bias = rating_metrics(bias.predict(t.user, t.item), t.rating)["rmse"]
    assert rmse_ar < rmse_bias, (rmse_ar, rmse_bias)
    assert autorec.train_seconds > 0 and len(autorec.history) == 40
    assert autorec.history[-1] < autorec.history[0]  # masked training loss went down
    pred = autorec.predict(t.user, t.item)
    assert pred.min() >= 1 and pred.max() <= 5


def test_i_autorec_item_fold_in_encodes_the_revealed_ratings_and_touches_nothing_else():
    data = make_synthetic(n_users=80, n_items=50, seed=3)
    autorec = _autorec(seed=1).fit(data.subset(data.item != 7))
    codes, rows = autorec.codes.copy(), np.nonzero(data.item == 7)[0]
    autorec.fold_in("item", 7, data.user[rows], data.rating[rows])
    assert not np.allclose(autorec.codes[7], codes[7])
    assert np.array_equal(np.delete(autorec.codes, 7, axis=0), np.delete(codes, 7, axis=0))
    # The encoder is frozen: folding the same ratings in twice gives the same code.
    first = autorec.codes[7].copy()
    autorec.fold_in("item", 7, data.user[rows], data.rating[rows])
    assert np.array_equal(first, autorec.codes[7])


def test_i_autorec_user_fold_in_fits_the_new_users_ratings():
    data = make_synthetic(n_users=80, n_items=50, seed=5)
    autorec = _autorec().fit(data.subset(data.user != 4))
    rows = np.nonzero(data.user == 4)[0]
    items, stars = data.item[rows], data.rating[rows]
    before = np.abs(autorec.predict(np.full(len(rows), 4), items) - stars).mean()
    out_w = autorec.out_w.copy()
    autorec.fold_in("user", 4, items, stars)
    after = np.abs(autorec.predict(np.full(len(rows), 4), items) - stars).mean()
    assert after < before
    assert np.array_equal(np.delete(autorec.out_w, 4, axis=0), np.delete(out_w, 4, axis=0))
    # No revealed ratings: the row falls back to the mean trained row.
    autorec.fold_in("user", 4, np.array([], np.int64), np.array([]))
    assert np.allclose(autorec.out_w[4], autorec._mean_w)
