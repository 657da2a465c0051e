"""Evaluation that can tell: validation-chosen hyperparameters, entity folds, paired bootstrap
intervals, EASE; on small generated data."""

import json
from dataclasses import replace

import numpy as np
import pytest

from stream_app.baselines import EASE, BiasOnly
from stream_app.cli import main
from stream_app.core.config import ModelConfig
from stream_app.core.training import Trainer
from stream_app.data.dataset import Split, random_split
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic
from stream_app.evaluation import protocols
from stream_app.evaluation.metrics import paired_bootstrap_rmse
from stream_app.evaluation.splits import entity_folds, hold_out, validation_split
from stream_app.evaluation.tuning import BaselineSet

QUIET = dict(log=lambda *a: None)
TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=6,
            batch_size=128)


@pytest.fixture(scope="module")
def split():
    return random_split(make_synthetic(n_users=90, n_items=60, mean_ratings_per_user=25, seed=5), 0.15, 0)


# ---- bootstrap -------------------------------------------------------------------------------
def test_bootstrap_of_identical_systems_is_zero():
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(1, 6, 300).astype(float), rng.normal(3, 1, 300)
    ci = paired_bootstrap_rmse(rng.integers(0, 30, 300), pred, pred, truth, n_boot=200)
    assert ci["diff"] == ci["low"] == ci["high"] == 0.0 and ci["entities"] == 30


def test_bootstrap_interval_brackets_the_difference_and_excludes_zero_for_a_clear_winner():
    rng = np.random.default_rng(1)
    entity, truth = rng.integers(0, 40, 2000), rng.integers(1, 6, 2000).astype(float)
    better, worse = truth + rng.normal(0, 0.5, 2000), truth + rng.normal(0, 1.0, 2000)
    ci = paired_bootstrap_rmse(entity, better, worse, truth, n_boot=500, seed=3)
    assert ci["low"] < ci["diff"] < ci["high"] < 0
    assert ci == paired_bootstrap_rmse(entity, better, worse, truth, n_boot=500, seed=3)  # seeded


def test_bootstrap_resamples_entities_not_ratings():
    """One entity with all the error: ratings-level resampling would give a narrow interval; entity-level
    resampling draws that entity 0, 1, 2... times, so the interval reaches zero difference."""
    entity = np.repeat(np.arange(10), 50)
    truth = np.full(500, 3.0)
    a, b = truth.copy(), truth.copy()
    a[entity == 0] += 2.0  # only entity 0 is predicted badly by a
    ci = paired_bootstrap_rmse(entity, a, b, truth, n_boot=1000, seed=0)
    assert ci["diff"] > 0 and ci["low"] == pytest.approx(0.0)


# ---- splits ----------------------------------------------------------------------------------
def test_validation_split_is_a_seeded_partition_of_the_training_ratings(split):
    v = validation_split(split.train, 0.2, seed=4)
    assert len(v.train) + len(v.test) == len(split.train) and v.name == "validation20-s4"
    assert 0.1 < len(v.test) / len(split.train) < 0.3
    again = validation_split(split.train, 0.2, seed=4)
    assert np.array_equal(again.test.user, v.test.user) and np.array_equal(again.test.item, v.test.item)


def test_entity_folds_are_disjoint_and_each_trains_without_its_entities(split):
    folds = entity_folds(split.train, "user", folds=3, held_out=6, min_ratings=10, seed=2)
    assert [len(f.entities) for f in folds] == [6, 6, 6]
    everyone = np.concatenate([f.entities for f in folds])
    assert len(np.unique(everyone)) == 18
    for f in folds:
        assert not np.isin(f.train.user, f.entities).any() and np.isin(f.held.user, f.entities).all()
        assert len(f.train) + len(f.held) == len(split.train)
    one = entity_folds(split.train, "item", folds=1, seed=2)[0]
    assert np.array_equal(one.entities, hold_out(split.train, "item", seed=2).entities)
    with pytest.raises(ValueError, match="too few"):
        entity_folds(split.train, "user", folds=500, min_ratings=10)


# ---- hyperparameters on validation -------------------------------------------------------------
def test_baselines_are_tuned_on_validation_never_on_test(split):
    other_test = replace(split.test, rating=np.where(split.test.rating > 3, 1.0, 5.0).astype(np.float32))
    corrupted = protocols.warm(Split(split.train, other_test, split.name), baselines=BaselineSet(["bias-only"]),
                               **QUIET)
    result = protocols.warm(split, baselines=BaselineSet(["bias-only"], seed=0), **QUIET)
    record = result["hyperparameters"]["bias-only"]
    assert result["hyperparameter_source"] == "validation" and record["parameter"] == "damping"
    assert record["chosen"] == min(BiasOnly.grid["damping"], key=lambda v: record["validation"][f"{v:g}"])
    assert record["validation_split"] == "validation10-s0"
    # other test ratings, the same choice (it never looks at them), and other test results
    assert corrupted["hyperparameters"] == result["hyperparameters"]
    assert corrupted["systems"]["bias-only"]["rmse"] != result["systems"]["bias-only"]["rmse"]
    defaults = protocols.warm(split, baselines=BaselineSet(["bias-only"], tune=False), **QUIET)
    assert defaults["hyperparameter_source"] == "defaults" and defaults["hyperparameters"]["bias-only"]["chosen"] == 5.0


def test_rating_protocols_refuse_a_ranker(split):
    with pytest.raises(ValueError, match="top-N protocol only"):
        protocols.warm(split, baselines=BaselineSet(["ease"]), **QUIET)


# ---- EASE --------------------------------------------------------------------------------------
def test_ease_is_the_closed_form(split):
    model = EASE(lam=30.0).fit(split.train)
    x = np.zeros((split.train.n_users, split.train.n_items))  # dense only on this tiny test matrix
    x[split.train.user, split.train.item] = 1.0
    p = np.linalg.inv(x.T @ x + 30.0 * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)
    assert np.allclose(model.b, b) and np.allclose(np.diag(model.b), 0)
    assert np.allclose(model.user_scores(3), x[3] @ b)
    items = np.arange(split.train.n_items)
    assert np.allclose(model.score(np.full(len(items), 3), items), x[3] @ b)
    model.fold_in("user", 3, np.array([0, 1]), np.array([5.0, 1.0]))
    assert np.allclose(model.user_scores(3), b[0] + b[1])
    with pytest.raises(NotImplementedError):
        model.fold_in("item", 0, np.array([1]), np.array([4.0]))


def test_topn_tunes_ease_and_popularity_weights_on_validation(split):
    result = protocols.topn(split, baselines=BaselineSet(["bias-only", "ease"], seed=0), **QUIET)
    assert {"ease", "ease+pop", "bias-only", "bias-only+pop", "popularity"} == set(result["systems"])
    ease = result["hyperparameters"]["ease"]
    assert ease["source"] == "validation" and ease["metric"] == "ndcg@10" and ease["chosen"] in EASE.grid["lam"]
    assert ease["chosen"] == max(EASE.grid["lam"], key=lambda v: ease["validation"][f"{v:g}"])
    weight = ease["popularity_weight"]
    assert weight["source"] == "validation" and weight["chosen"] == max(
        (float(w) for w in weight["validation"]), key=lambda w: weight["validation"][f"{w:g}"])
    assert result["split"] == split.name and result["seed"] == 0
    assert 0 <= result["systems"]["ease"]["ndcg"] <= 1


def test_ease_is_tuned_even_with_default_hyperparameters(split):
    result = protocols.topn(split, baselines=BaselineSet(["bias-only", "ease"], tune=False), **QUIET)
    assert result["hyperparameters"]["ease"]["source"] == "validation"
    assert result["hyperparameters"]["bias-only"]["source"] == "defaults"
    assert result["hyperparameter_source"] == "defaults+validation"


# ---- fold-in with folds and intervals ------------------------------------------------------------
def test_foldin_folds_pool_entities_and_give_intervals_against_each_baseline(split):
    def train_ours(data):
        return Trainer(ModelConfig(**TINY), FeatureSchema.fit(data), "cpu", progress=False).fit(data, **QUIET)[0]

    result = protocols.foldin(split, "user", ks=(1, 3), train_ours=train_ours, seed=1, folds=2, held_out=5,
                              n_boot=200, baselines=BaselineSet(["bias-only"], seed=1), **QUIET)
    assert result["folds"] == 2 and result["held_out_per_fold"] == [5, 5] and result["held_out"] == 10
    assert set(result["systems"]) == {"aevec-foldin", "bias-only-foldin"}
    assert set(result["intervals"]) == {"bias-only-foldin"}
    for k in (1, 3):
        ci = result["intervals"]["bias-only-foldin"][k]
        assert ci["entities"] == 10 and ci["low"] <= ci["diff"] <= ci["high"]
        ours, theirs = result["systems"]["aevec-foldin"][k]["rmse"], result["systems"]["bias-only-foldin"][k]["rmse"]
        assert ci["diff"] == pytest.approx(ours - theirs)
    assert result["hyperparameter_source"] == "validation" and len(result["hyperparameters_per_fold"]) == 2
    assert result["seed"] == 1 and result["split"] == split.name


def test_cli_foldin_folds_flags_and_json(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["evaluate", "--protocol", "foldin-items", "--data", "synthetic", "--synthetic-users", "60",
                 "--synthetic-items", "40", "--no-model", "--baselines", "bias-only", "--folds", "2",
                 "--held-out", "4", "--ks", "1,3", "--hyperparameters", "defaults", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["folds"] == 2 and result["held_out_per_fold"] == [4, 4]
    assert result["hyperparameter_source"] == "defaults" and result["seed"] == 0 and result["split"]
    assert "bias-only-foldin rmse" in capsys.readouterr().out


def test_foldin_table_prints_each_interval_beside_the_rmses():
    from stream_app.commands.evaluate import format_table

    result = {"protocol": "foldin-users", "ks": [1, 5],
              "systems": {"aevec-foldin": {"1": {"rmse": 1.0}, "5": {"rmse": 0.95}},
                          "als-mf-foldin": {"1": {"rmse": 1.05}, "5": {"rmse": 0.97}}},
              "intervals": {"als-mf-foldin": {"1": {"diff": -0.05, "low": -0.08, "high": -0.02}}},
              "intervals_about": "RMSE of aevec-foldin minus the system's"}
    lines = format_table(result).splitlines()
    assert "ours - als-mf-foldin [95% CI]" in lines[0]
    assert lines[2].endswith("-0.0500 [-0.0800, -0.0200]") and lines[3].endswith("-")
    assert lines[-1].startswith("RMSE of aevec-foldin minus")
