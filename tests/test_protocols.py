"""Evaluation protocols on small generated data: thumbs metrics, prequential, top-N, the CLI's JSON."""

import json
from itertools import product

import numpy as np
import pytest

from stream_app.baselines import ALSMF, BiasOnly
from stream_app.cli import main
from stream_app.core.config import ModelConfig
from stream_app.core.training import Trainer
from stream_app.data.dataset import random_split
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic
from stream_app.evaluation import auc, protocols, thumbs_metrics
from stream_app.evaluation.protocols.prequential import AEVecStream, BaselineStream, run_prequential
from stream_app.evaluation.protocols.topn import baseline_scorer, evaluate_topn

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=6,
            batch_size=128)
SMALL_AUTOREC = {"hidden": 16, "epochs": 5, "l2": 1.0, "lr": 1e-2, "batch_size": 32}


@pytest.fixture(scope="module")
def split():
    return random_split(make_synthetic(n_users=80, n_items=60, mean_ratings_per_user=20, seed=7), 0.15, 0)


@pytest.fixture(scope="module")
def rec(split):
    rec, _ = Trainer(ModelConfig(**TINY), FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *a: None)
    return rec


# ---- thumbs metrics (seed 004) ---------------------------------------------------------------
def test_auc_matches_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 60).astype(float)  # many ties
    label = rng.random(60) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in product(score[label], score[~label])]
    assert auc(score, label) == pytest.approx(np.mean(pairs))
    assert auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
    assert auc(np.array([0.9, 0.1]), np.array([False, True])) == 0.0
    assert np.isnan(auc(np.array([0.3, 0.4]), np.array([True, True])))


def test_thumbs_buckets_4_and_5_stars_as_up():
    stars = np.array([1, 2, 3, 4, 5, 5])
    m = thumbs_metrics(np.array([0.1, 0.2, 0.6, 0.7, 0.9, 0.4]), stars)
    assert m["up_rate"] == pytest.approx(0.5) and m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["auc"] == pytest.approx(8 / 9)


def test_warm_reports_our_model_and_baselines_side_by_side(split, rec):
    result = protocols.warm(split, rec, protocols.baseline_factories(("bias-only", "als-mf")), log=lambda *a: None)
    assert set(result["systems"]) == {"aevec", "bias-only", "als-mf"}
    ours = result["systems"]["aevec"]
    assert ours["n"] == len(split.test) and 0 <= ours["thumbs"]["accuracy"] <= 1 and 0 <= ours["thumbs"]["auc"] <= 1
    assert result["systems"]["als-mf"]["train_seconds"] > 0
    for system in result["systems"].values():  # every test rating in one bin of its user's and its item's history
        for side in ("user", "item"):
            assert sum(b["n"] for b in system[f"by_{side}_history"].values()) == len(split.test)


def test_rmse_by_history_bins_the_test_ratings():
    from stream_app.evaluation.metrics import rmse_by_history

    pred, truth = np.array([3.0, 4.0, 2.0, 5.0]), np.array([3.0, 2.0, 2.0, 4.0])
    bins = rmse_by_history(pred, truth, np.array([0, 19, 20, 250]), (0, 20, 200))
    assert bins == {"0-19": {"n": 2, "rmse": pytest.approx(np.sqrt(2.0))}, "20-199": {"n": 1, "rmse": 0.0},
                    "200+": {"n": 1, "rmse": 1.0}}


# ---- prequential ---------------------------------------------------------------------------
def test_prequential_predicts_before_it_updates(split):
    stream = split.test

    class Recorder:
        name = "recorder"

        def __init__(self):
            self.seen = set()

        def predict(self, u, i, ts):
            assert not any((int(a), int(b)) in self.seen for a, b in zip(u, i, strict=True))
            return np.full(len(u), 3.0)

        def update(self, u, i, r, t):
            self.seen.add((u, i))

    out = run_prequential([Recorder()], stream, points=10)["recorder"]
    assert out["n"] == len(stream) and len(out["curve"]["n"]) == 10 and out["curve"]["n"][-1] == len(stream)
    assert out["rmse"] == pytest.approx(float(np.sqrt(np.mean((stream.rating - 3.0) ** 2))))
    assert out["curve"]["rmse"][-1] == pytest.approx(out["rmse"])


def test_prequential_updates_move_the_baselines_and_chunking_changes_the_result(split):
    fresh = run_prequential([BaselineStream(BiasOnly().fit(split.train), split.train)], split.test)
    static = BiasOnly().fit(split.train)
    t = split.test
    no_update = float(np.sqrt(np.mean((static.predict(t.user, t.item) - t.rating) ** 2)))
    assert fresh["bias-only"]["rmse"] != pytest.approx(no_update)
    chunked = run_prequential([BaselineStream(BiasOnly().fit(split.train), split.train)], split.test, chunk=50)
    assert chunked["bias-only"]["chunk"] == 50
    assert chunked["bias-only"]["rmse"] != pytest.approx(fresh["bias-only"]["rmse"])


def test_prequential_moves_our_vectors_with_frozen_networks(split, rec):
    weights = {k: v.copy() for k, v in rec.net.state.items()}
    trained = rec.vectors["user"].copy()
    stream = AEVecStream(rec, split.train)
    out = run_prequential([stream], split.test, limit=40)["aevec"]
    assert out["n"] == 40 and np.isfinite(out["rmse"])
    moved = np.unique(split.test.user[split.test.time_order()[:40]])
    assert not np.allclose(stream.vectors["user"][moved], trained[moved])
    assert np.array_equal(rec.vectors["user"], trained)  # the model's own tables are untouched
    assert all(np.array_equal(v, weights[k]) for k, v in rec.net.state.items())


# ---- top-N -----------------------------------------------------------------------------------
def test_topn_oracle_is_perfect_and_rated_items_are_excluded(split):
    test, train = split.test, split.train
    truth = np.zeros((train.n_users, train.n_items))
    truth[test.user, test.item] = test.rating
    truth[train.user, train.item] = 10  # rated in training: must never be recommended
    out = evaluate_topn({"oracle": lambda u: truth[u]}, train, test, n=10)["oracle"]
    assert out["ndcg"] == pytest.approx(1.0) and out["users"] > 0
    relevant = np.bincount(test.user[test.rating >= 4], minlength=train.n_users)
    users = relevant > 0
    assert out["recall"] == pytest.approx(np.mean(np.minimum(relevant[users], 10) / relevant[users]))
    assert out["precision"] == pytest.approx(np.mean(np.minimum(relevant[users], 10) / 10))


def test_topn_als_beats_random_on_planted_factors():
    split = random_split(make_synthetic(n_users=150, n_items=100, seed=3), 0.2, 0)
    rng = np.random.default_rng(0)
    out = evaluate_topn({"als": baseline_scorer(ALSMF(factors=8, reg=2.0, iterations=8).fit(split.train)),
                         "random": lambda u: rng.random(split.train.n_items)}, split.train, split.test)
    assert out["als"]["ndcg"] > out["random"]["ndcg"]


# ---- fold-in and the CLI ---------------------------------------------------------------------
def test_foldin_with_retrain_and_i_autorec(split):
    result = protocols.foldin(split, "user", ks=(1, 3), baselines=protocols.baseline_factories(
        autorec=SMALL_AUTOREC, als={"factors": 4, "iterations": 4}), retrain_ks=(3,), log=lambda *a: None)
    assert set(result["systems"]) == {"bias-only-foldin", "als-mf-foldin", "i-autorec-foldin", "als-mf-retrain"}
    assert set(result["systems"]["als-mf-retrain"]) == {3}
    assert all(set(v) == {1, 3} for n, v in result["systems"].items() if n.endswith("-foldin"))


def test_foldin_refuses_a_model_that_saw_the_held_out_entities(split, rec):
    with pytest.raises(ValueError, match="held-out"):
        protocols.foldin(split, "user", ks=(1,), rec=rec, log=lambda *a: None)


@pytest.mark.parametrize("protocol", ["foldin-items", "prequential", "topn", "warm"])
def test_cli_protocols_write_json_and_png(tmp_path, protocol):
    out = tmp_path / "artifacts" / "syn"
    data = ["--data", "synthetic", "--synthetic-users", "60", "--synthetic-items", "40"]
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    if protocol != "foldin-items":
        assert main(["train", *data, "--out", str(out), "--artifacts-dir", str(tmp_path / "artifacts"), "--quiet",
                     *flags]) == 0
    extra = ["--ks", "1,3", "--retrain-ks", "3", "--retrain-ours", *flags] if protocol == "foldin-items" else \
        ["--artifact", str(out)] + (["--limit", "30"] if protocol == "prequential" else [])
    result_file, png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["evaluate", "--protocol", protocol, *data, "--baselines", "bias-only,als-mf", "--quiet",
                 "--json", str(result_file), "--png", str(png), *extra]) == 0
    result = json.loads(result_file.read_text())
    assert result["protocol"] == protocol
    if protocol == "foldin-items":
        assert set(result["systems"]) == {"aevec-foldin", "bias-only-foldin", "als-mf-foldin", "als-mf-retrain",
                                          "aevec-retrain"}
        assert set(result["systems"]["aevec-foldin"]) == {"1", "3"} and set(result["systems"]["aevec-retrain"]) == {"3"}
    else:
        ranked_too = {"aevec-stars", "bias-only+pop", "als-mf+pop"} if protocol == "topn" else set()
        assert set(result["systems"]) - {"popularity"} == {"aevec", "bias-only", "als-mf"} | ranked_too
        assert ("popularity" in result["systems"]) == (protocol == "topn")
    if protocol in ("foldin-items", "prequential"):
        assert png.stat().st_size > 1000
