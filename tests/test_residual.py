"""The closed-form residual factor (core/residual.py): the ridge solver, what the frozen networks do with the
factor columns, and that training's ALS and serving's fold-in agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_app.core import residual
from stream_app.core.bulk import predict_dataset
from stream_app.core.config import ModelConfig
from stream_app.core.inference import FrozenNetworks
from stream_app.core.model import AEVecModel
from stream_app.core.training import Trainer
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic
from stream_app.evaluation.splits import random_split

DIMS = dict(user=5, item=7, context=3, rates=2)


def test_ridge_by_owner_solves_each_owner_alone():
    rng = np.random.default_rng(0)
    owner = np.sort(rng.integers(0, 6, 23))
    owner = owner[owner != 3]  # owner 3 has no rows
    x, y = rng.normal(size=(len(owner), 3)), rng.normal(size=len(owner))
    got = residual.ridge_by_owner(owner, x, y, 6, reg=0.7)
    for o in range(6):
        xo, yo = x[owner == o], y[owner == o]
        want = np.linalg.solve(xo.T @ xo + 0.7 * np.eye(3), xo.T @ yo)
        np.testing.assert_allclose(got[o], want, rtol=1e-5, atol=1e-6)
    assert not got[3].any()


def _nets(**over):
    """The same random weights read with and without a residual factor of rank 3."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_dim=6, m_records=4, k_samples=5, hidden=16, predictor_hidden=12, residual_rank=0, **over)
    model = AEVecModel(cfg, DIMS["user"], DIMS["item"], DIMS["context"], DIMS["rates"]).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict(keep_vars=True).items()}
    wide = ModelConfig(**{**cfg.to_dict(), "residual_rank": 3, "residual_reg": 0.5})
    return FrozenNetworks(cfg, model.dims, state), FrozenNetworks(wide, model.dims, state)


@pytest.mark.parametrize("encoder", ["set", "concat"])
def test_factor_columns_leave_the_codes_alone_and_fold_in_by_ridge(encoder):
    narrow, wide = _nets(encoder=encoder)
    at, rng = wide.factor_at, np.random.default_rng(1)
    for side, other in (("user", "item"), ("item", "user")):
        count = np.array([1, 3, 9], np.int64)
        records = rng.normal(size=(int(count.sum()), wide.vector_dim + DIMS[other] + DIMS["context"]
                                   + DIMS["rates"])).astype(np.float32)
        without = np.delete(records, np.arange(at, wide.vector_dim), axis=1)
        data = rng.normal(size=(3, DIMS[side])).astype(np.float32)
        start, seeds = np.cumsum(count) - count, [11, 12, 13]
        got = wide.fold_in(side, records, start, count, seeds, wide.cold_vectors(side, data), data=data)
        base = narrow.fold_in(side, without, start, count, seeds, narrow.cold_vectors(side, data), data=data)
        np.testing.assert_allclose(got[:, :at], base, rtol=1e-5, atol=1e-6)
        for b in range(3):  # the factor: ridge of (star - network output) against the other side's factors
            rows = records[start[b]:start[b] + count[b]]
            own = np.repeat(np.append(base[b], np.zeros(3, np.float32))[None], count[b], 0)
            own_data = np.repeat(data[b:b + 1], count[b], 0)
            v = wide.vector_dim
            w = v + DIMS[other]
            parts = (rows[:, :v], rows[:, v:w], rows[:, w:w + DIMS["context"]])
            args = (own, own_data, parts[0], parts[1], parts[2]) if side == "user" else \
                (parts[0], parts[1], own, own_data, parts[2])
            target = rows[:, -DIMS["rates"]] - wide.predictor(*args)[:, 0]
            q = rows[:, at:v].astype(np.float64)
            want = np.linalg.solve(q.T @ q + 0.5 * np.eye(3), q.T @ target)
            np.testing.assert_allclose(got[b, at:], want, rtol=1e-4, atol=1e-5)


def test_the_predictor_adds_the_factor_product_everywhere():
    narrow, wide = _nets()
    at, rng = wide.factor_at, np.random.default_rng(2)
    user_vec, item_vec = (rng.normal(size=(n, wide.vector_dim)).astype(np.float32) for n in (2, 5))
    user_data, item_data = rng.normal(size=(2, DIMS["user"])), rng.normal(size=(5, DIMS["item"]))
    user_data, item_data = user_data.astype(np.float32), item_data.astype(np.float32)
    context = rng.normal(size=(2, DIMS["context"])).astype(np.float32)
    product = user_vec[:, at:] @ item_vec[:, at:].T  # [2, 5]
    u, i = np.repeat(np.arange(2), 5), np.tile(np.arange(5), 2)
    pair = (user_vec[u], user_data[u], item_vec[i], item_data[i], context[u])
    base = narrow.predictor(user_vec[u, :at], user_data[u], item_vec[i, :at], item_data[i], context[u])
    full = wide.predictor(*pair)
    np.testing.assert_allclose(full[:, 0], base[:, 0] + product.reshape(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full[:, 1], base[:, 1], rtol=1e-5, atol=1e-6)
    part = wide.predictor.item_part(item_vec, item_data)
    scored = wide.predictor.score_items(part, item_vec, user_vec, user_data, context)
    np.testing.assert_allclose(scored.reshape(-1, 2), full, rtol=1e-4, atol=1e-5)
    paired = wide.predictor.score_pairs(part[i], item_vec[i], user_vec, user_data, context, u)
    np.testing.assert_allclose(paired, full, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained():
    data = make_synthetic(n_users=200, n_items=150, mean_ratings_per_user=40, seed=5)
    split = random_split(data, 0.1, seed=0)
    cfg = ModelConfig(n_dim=8, m_records=6, k_samples=16, hidden=32, predictor_hidden=32, rounds=2,
                      steps_per_round=40, batch_size=256, valid_fraction=0.1, residual_rank=4)
    torch.manual_seed(0)
    rec, report = Trainer(cfg, FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *a: None)
    return rec, report, split


def test_training_fits_the_factor_on_validation_and_serving_refolds_it(trained):
    rec, report, split = trained
    assert report["residual_reg"]["source"] == "validation"
    assert rec.config.residual_reg == report["residual_reg"]["chosen"] in residual.REGS
    at = rec.net.factor_at
    assert rec.vectors["user"].shape[1] == at + 4 and np.abs(rec.vectors["user"][:, at:]).sum() > 0
    # Serving's solve for a user's factor, from all its training ratings and its stored [code, bias], gives back
    # what training stored (ALS ends with the user solve against the final item factors).
    train, users = split.train, np.arange(12)
    sets = [rec.records_from_ratings("user", train.item[train.user == u], train.rating[train.user == u],
                                     train.ts[train.user == u]) for u in users]
    records, count = np.concatenate(sets), np.array([len(x) for x in sets])
    factors = rec.net.fold_factors("user", records, np.cumsum(count) - count, count, rec.vectors["user"][users],
                                   rec.features["user"][users])
    np.testing.assert_allclose(factors, rec.vectors["user"][users, at:], rtol=1e-4, atol=1e-5)


def test_the_factor_captures_interaction_the_codes_miss(trained):
    """The planted data's ratings have a factor-product part; on held-out ratings the factor lowers the error."""
    rec, _, split = trained
    truth = split.test.rating
    with_factor = np.sqrt(np.mean((predict_dataset(rec, split.test) - truth) ** 2))
    saved = {s: rec.vectors[s].copy() for s in rec.vectors}
    try:
        for s in rec.vectors:
            rec.vectors[s][:, rec.net.factor_at:] = 0.0
        without = np.sqrt(np.mean((predict_dataset(rec, split.test) - truth) ** 2))
    finally:
        rec.vectors = saved
    assert with_factor < without, (with_factor, without)
