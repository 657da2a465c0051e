"""`recsys tune`: an Optuna study on validation ratings, stored in SQLite, resumable, best config usable."""

from __future__ import annotations

import json

import pytest

from stream_app.cli import main
from stream_app.core.config import ModelConfig
from stream_app.core.tuning import SEARCH_SPACE, suggest

pytest.importorskip("optuna")

TINY = dict(rounds=2, steps_per_round=3, batch_size=64)


def tune_args(tmp_path, trials: int) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    return ["tune", "--data", "synthetic", "--synthetic-users", "40", "--synthetic-items", "30",
            "--trials", str(trials), "--study-db", str(tmp_path / "study.db"), "--study-name", "tiny",
            "--out", str(tmp_path / "best.json"),
            "--png", str(tmp_path / "trials.png"), *flags]


def test_tune_writes_a_config_train_accepts_and_resumes_its_study(tmp_path, capsys):
    import optuna

    assert main(tune_args(tmp_path, 1)) == 0
    best = ModelConfig.from_file(tmp_path / "best.json")  # what `recsys train --config` reads
    assert best.rounds == 2 and best.steps_per_round == 3  # the base config's unsearched fields are kept
    assert (tmp_path / "trials.png").stat().st_size > 0
    out = capsys.readouterr().out
    assert "test ratings are not used" in out and "best trial" in out

    assert main(tune_args(tmp_path, 1)) == 0  # resumes: the same study gets a second, different trial
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert len(study.trials) == 2 and study.trials[0].params != study.trials[1].params
    finished = [t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert study.best_value == min(finished)
    params = json.loads((tmp_path / "best.json").read_text())
    assert all(params[k] == v for k, v in study.best_trial.params.items())


def test_suggested_configs_stay_inside_the_method_ranges():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        config = suggest(study.ask(), ModelConfig())
        assert 5 <= config.m_records <= 9 and 24 <= config.k_samples <= 64 and 16 <= config.n_dim <= 64
    assert {p.name for p in SEARCH_SPACE} <= set(ModelConfig().to_dict())
