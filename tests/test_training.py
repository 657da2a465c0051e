"""Trainer mechanics: checkpoints and --resume, the seeds' reconstruct objective, the concat encoder."""

import numpy as np
import pytest

from stream_app.core.bulk import rmse_of
from stream_app.core.config import ModelConfig
from stream_app.core.freezing import FOLDIN_PRIORS
from stream_app.core.training import Trainer
from stream_app.data.dataset import random_split
from stream_app.data.features import FeatureSchema
from stream_app.data.synthetic import make_synthetic

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=3, steps_per_round=8,
            batch_size=128, predictor_epochs=2)


@pytest.fixture(scope="module")
def split():
    return random_split(make_synthetic(n_users=80, n_items=60, mean_ratings_per_user=20, seed=7), 0.1, 0)


def test_interrupted_training_resumes_from_its_checkpoint(split, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    schema = FeatureSchema.fit(split.train)

    def stop_at_round_2(line):
        if line.startswith("round   2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(ModelConfig(**TINY), schema, "cpu", progress=False).fit(split.train, ckpt, log=stop_at_round_2)
    assert ckpt.exists()
    lines = []
    rec, report = Trainer(ModelConfig(**TINY), schema, "cpu", progress=False).fit(
        split.train, ckpt, resume=True, log=lines.append)
    assert lines[0].startswith(f"resumed from {ckpt} after round 1")
    assert [r["round"] for r in report["rounds"]] == [1, 2, 3]
    assert np.isfinite(rmse_of(rec, split.test))


def test_resume_refuses_a_checkpoint_of_another_config(split, tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    schema = FeatureSchema.fit(split.train)
    Trainer(ModelConfig(**TINY), schema, "cpu", progress=False).fit(split.train, ckpt, log=lambda *_: None)
    other = ModelConfig(**{**TINY, "n_dim": 7})
    with pytest.raises(ValueError, match="another config"):
        Trainer(other, schema, "cpu", progress=False).fit(split.train, ckpt, resume=True, log=lambda *_: None)


@pytest.mark.parametrize("encoder,objective", [("concat", "joint"), ("set", "reconstruct"),
                                               ("concat", "reconstruct")])
def test_every_encoder_and_objective_trains_and_predicts(split, encoder, objective):
    cfg = ModelConfig(**{**TINY, "encoder": encoder, "objective": objective})
    rec, report = Trainer(cfg, FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *_: None)
    lo, hi = split.train.rating_scale
    pred = rec.predict(0, np.arange(10))
    assert np.all((pred >= lo) & (pred <= hi))
    assert np.isfinite(report["rounds"][-1]["recon_loss"])
    assert rmse_of(rec, split.test) < 1.5


def test_training_is_reproducible_with_a_seed(split):
    runs = [Trainer(ModelConfig(**TINY), FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *_: None)[0] for _ in range(2)]
    assert np.array_equal(runs[0].vectors["user"], runs[1].vectors["user"])


def test_serving_constants_are_chosen_on_the_validation_ratings(split):
    from stream_app.evaluation.protocols.topn import POPULARITY_WEIGHTS, calibrate_popularity

    config = ModelConfig(**TINY, valid_fraction=0.2, foldin_prior=3.0, popularity_weight=1.0)
    rec, report = Trainer(config, FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *_: None, calibrate=calibrate_popularity)
    prior = report["foldin_prior"]
    assert prior["source"] == "validation" and prior["chosen"] in FOLDIN_PRIORS
    assert prior["validation_rmse"][f"{prior['chosen']:g}"] == min(prior["validation_rmse"].values())
    assert rec.config.foldin_prior == prior["chosen"]
    weight = report["popularity_weight"]
    assert weight["source"] == "validation" and weight["chosen"] in POPULARITY_WEIGHTS
    assert rec.config.popularity_weight == weight["chosen"]
    assert config.foldin_prior == 3.0  # the caller's config is not changed

    fixed = ModelConfig(**TINY, valid_fraction=0.2, choose_on_validation=False, foldin_prior=3.0)
    rec, report = Trainer(fixed, FeatureSchema.fit(split.train), "cpu", progress=False).fit(
        split.train, log=lambda *_: None, calibrate=calibrate_popularity)
    assert "foldin_prior" not in report and "popularity_weight" not in report
    assert rec.config.foldin_prior == 3.0 and rec.config.popularity_weight == 1.0
