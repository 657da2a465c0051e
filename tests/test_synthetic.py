"""Synthetic ratings: deterministic, MovieLens-like, with side data tied to the planted factors."""

import time

import numpy as np
import pytest

from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic


@pytest.fixture(scope="module")
def data():
    return make_synthetic()


def test_deterministic_given_seed(data):
    again = make_synthetic()
    for name in ("user", "item", "rating", "ts"):
        assert np.array_equal(getattr(data, name), getattr(again, name))
    assert data.users == again.users and data.items == again.items
    for name, value in data.extras.items():
        assert np.array_equal(value, again.extras[name])
    assert not np.array_equal(make_synthetic(seed=1).rating[:200], data.rating[:200])


def test_shape_ids_and_extras(data):
    assert (data.n_users, data.n_items) == (600, 400)
    assert data.user_ids[0] == "1" and len(set(data.item_ids)) == 400
    assert data.extras["user_factors"].shape == (600, 4) and data.extras["item_factors"].shape == (400, 4)
    assert data.extras["user_bias"].shape == (600,) and data.extras["item_bias"].shape == (400,)
    assert 30 * 600 < len(data) < 50 * 600  # about mean_ratings_per_user per user


def test_no_duplicate_pairs(data):
    pairs = data.user * data.n_items + data.item
    assert len(np.unique(pairs)) == len(pairs)


def test_ratings_look_like_movielens(data):
    assert set(np.unique(data.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.3 < data.rating.mean() < 3.7
    assert 0.8 < data.rating.std() < 1.2
    per_user = np.bincount(data.user, minlength=data.n_users)
    per_item = np.bincount(data.item, minlength=data.n_items)
    assert (per_user < 5).any() and (per_item < 5).any()  # cold-ish entities exist
    assert per_user.max() > 4 * per_user.mean()  # heavy tail


def test_ratings_follow_the_planted_model(data):
    e = data.extras
    expected = 3.5 + e["user_bias"][data.user] + e["item_bias"][data.item] + np.sum(
        e["user_factors"][data.user] * e["item_factors"][data.item], axis=1)
    assert np.corrcoef(expected, data.rating)[0, 1] > 0.8


def test_timestamps_within_a_year_in_time_order(data):
    assert np.all(np.diff(data.ts) >= 0)  # rows are a time-ordered log, so each user's are too
    assert data.ts.max() - data.ts.min() <= 365 * 86400


def test_side_data_correlates_with_factors(data):
    users, items = data.extras["user_factors"], data.extras["item_factors"]
    is_male = np.array([u["gender"] == "M" for u in data.users])
    assert ((users[:, 0] > 0) == is_male).mean() > 0.8
    ages = np.array([u["age"] for u in data.users])
    assert np.corrcoef(users[:, 1], ages)[0, 1] > 0.7
    years = np.array([i["year"] for i in data.items])
    assert np.corrcoef(items[:, 2], years)[0, 1] > 0.7
    assert all(i["genres"] for i in data.items)


def test_side_data_predicts_factors(data):
    """Cold start is meaningful: a linear map from encoded side data explains much of the factors."""
    schema = FeatureSchema.fit(data)
    for features, factors in ((schema.user_matrix(data), data.extras["user_factors"]),
                              (schema.item_matrix(data), data.extras["item_factors"])):
        design = np.hstack([features, np.ones((len(features), 1), np.float32)])
        coef, *_ = np.linalg.lstsq(design, factors, rcond=None)
        residual = factors - design @ coef
        r2 = 1 - residual.var(axis=0).sum() / factors.var(axis=0).sum()
        assert r2 > 0.4


def test_fast_enough():
    start = time.perf_counter()
    make_synthetic(seed=5)
    assert time.perf_counter() - start < 1.0
    start = time.perf_counter()
    big = make_synthetic(n_users=5000, seed=5)
    assert time.perf_counter() - start < 5.0
    assert big.n_users == 5000


def test_small_and_one_factor_configurations():
    tiny = make_synthetic(n_users=5, n_items=3, n_factors=1, mean_ratings_per_user=10, seed=2)
    assert tiny.extras["user_factors"].shape == (5, 1)
    assert np.bincount(tiny.user, minlength=5).max() <= 3
