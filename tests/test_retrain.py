"""`recsys retrain`: one versioned artifact per run from tiny synthetic data, promotion through `current`."""

from __future__ import annotations

import pytest

from stream_app.cli import main
from stream_app.commands import retrain as retrain_module
from stream_app.commands.retrain import parse_duration
from stream_app.core.artifacts import load_artifact, read_manifest
from stream_app.errors import RecsysError

TINY = dict(n_dim=6, m_records=5, k_samples=8, hidden=24, predictor_hidden=24, rounds=2, steps_per_round=5,
            batch_size=128)


def args(artifacts, *extra) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    return ["retrain", *extra, "--data", "synthetic", "--synthetic-users", "40", "--synthetic-items", "30",
            "--artifacts-dir", str(artifacts), "--quiet", *flags]


def versions(artifacts) -> list[str]:
    return sorted(p.name for p in artifacts.iterdir() if (p / "manifest.json").exists())


def test_once_trains_a_new_version_and_promotes_it(tmp_path, capsys):
    artifacts = tmp_path / "artifacts"
    assert main(args(artifacts, "--once")) == 0
    [first] = versions(artifacts)
    assert first.startswith("synthetic-") and (artifacts / "current").read_text() == first + "\n"
    rec = load_artifact(artifacts)  # through the pointer
    assert rec.model_version == read_manifest(artifacts / first)["model_version"]
    assert "promoted" in capsys.readouterr().out
    assert not list(artifacts.glob(".current*")) and not list(artifacts.glob("*.checkpoint"))


def test_no_promote_leaves_current_alone(tmp_path):
    artifacts = tmp_path / "artifacts"
    assert main(args(artifacts, "--once", "--seed", "1")) == 0
    [first] = versions(artifacts)
    import time

    time.sleep(1.1)  # folder names carry the time to the second
    assert main(args(artifacts, "--once", "--no-promote", "--seed", "2")) == 0
    both = versions(artifacts)
    assert len(both) == 2 and (artifacts / "current").read_text().strip() == first
    second = next(name for name in both if name != first)
    assert read_manifest(artifacts / second)["model_version"] != read_manifest(artifacts / first)["model_version"]


def test_every_keeps_its_schedule_after_a_failed_run(tmp_path, monkeypatch, capsys):
    calls, sleeps = [], []

    def failing(*a, **k):
        calls.append(1)
        raise RecsysError("no data today")

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(retrain_module, "train_model", failing)
    monkeypatch.setattr(retrain_module.time, "sleep", sleep)
    assert main(args(tmp_path / "artifacts", "--every", "1h30m")) == 130  # stopped by Ctrl-C while waiting
    assert len(calls) == 2 and all(5300 < s <= 5400 for s in sleeps)
    assert "`current` unchanged" in capsys.readouterr().err
    assert not (tmp_path / "artifacts" / "current").exists()


def test_once_reports_a_failure(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(retrain_module, "train_model", lambda *a, **k: (_ for _ in ()).throw(RecsysError("boom")))
    assert main(args(tmp_path / "artifacts", "--once")) == 2
    assert "boom" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [("24h", 86400), ("90m", 5400), ("1h30m", 5400), ("45s", 45),
                                           ("2d", 172800), ("3600", 3600), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "h", "24x", "1h 30m", "-5m", "soon"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_every_and_once_are_exclusive_and_one_is_required(tmp_path, capsys):
    for extra in ([], ["--once", "--every", "1h"]):
        with pytest.raises(SystemExit):
            main(args(tmp_path, *extra))
    assert "--every" in capsys.readouterr().err


def test_keep_prunes_old_artifacts_but_not_current(tmp_path, capsys):
    import json

    artifacts = tmp_path / "artifacts"
    for k in range(3):  # older models, as earlier runs left them
        (artifacts / f"old{k}").mkdir(parents=True)
        (artifacts / f"old{k}" / "manifest.json").write_text(json.dumps({"created": f"2020-01-0{k + 1}T00:00:00Z"}))
    assert main(args(artifacts, "--once", "--keep", "2")) == 0
    kept = versions(artifacts)
    current = (artifacts / "current").read_text().strip()
    assert len(kept) == 2 and current in kept and "old2" in kept
    assert "removed old artifact" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(args(artifacts, "--once", "--keep", "0"))
