"""User errors of `recsys`: exit status 2 and one line on stderr that names the fix, no traceback
(unless `recsys --debug`). Each case runs the CLI as a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import stream_app


def recsys(*args: str, cwd=None, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m stream_app.cli ARGS` (the `recsys` entry point) with an empty data cache and no mirror."""
    run_env = {**os.environ, "RECSYS_DATA_MIRROR": "", **(env or {})}
    return subprocess.run([sys.executable, "-m", "stream_app.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=run_env, timeout=timeout)


def error_line(done: subprocess.CompletedProcess) -> str:
    """The one stderr line of a user error (asserting exit status 2, one line, no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("recsys: error: "), lines[0]
    return lines[0]


@pytest.fixture
def home(tmp_path):
    """Settings that keep the command inside tmp_path (data cache, artifacts)."""
    return {"RECSYS_DATA_CACHE": str(tmp_path / "cache"), "RECSYS_ARTIFACTS_DIR": str(tmp_path / "artifacts")}


def test_version():
    done = recsys("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"recsys {stream_app.__version__}"


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--no-model"], ["replay"]])
def test_unknown_dataset(command, home):
    line = error_line(recsys(*command, "--data", "nonexistent", env=home))
    assert "unknown dataset 'nonexistent'" in line and "ml-100k" in line and "recsys data list" in line


@pytest.mark.parametrize("command", [["train"], ["evaluate", "--no-model"], ["replay", "--part", "train"]])
def test_unknown_split(command, home):
    line = error_line(recsys(*command, "--data", "synthetic", "--split", "u9", env=home))
    assert "unknown split 'u9' for synthetic; valid: random, none" in line


def test_missing_dataset_names_download_and_mirror(home):
    line = error_line(recsys("data", "info", "ml-1m", env=home))
    assert "recsys data download ml-1m" in line
    assert "set RECSYS_DATA_MIRROR to a folder holding ml-1m/ or ml-1m.zip" in line


def test_debug_shows_the_traceback(home):
    done = recsys("--debug", "data", "info", "ml-1m", env=home)
    assert done.returncode != 0 and "Traceback" in done.stderr and "DataNotFoundError" in done.stderr


def test_evaluate_without_a_model_says_train_one(home, tmp_path):
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "README.md").write_text("a fresh clone's model_artifacts\n")
    line = error_line(recsys("evaluate", "--data", "synthetic", "--baselines", "", env=home))
    assert "no model yet in" in line and line.endswith("run `recsys train`")


def fake_model(artifacts, data_name: str, name: str = "m1"):
    """A folder with only a manifest that names the training data, made current (enough for the check)."""
    from stream_app.core.artifacts import FORMAT, FORMAT_VERSION

    folder = artifacts / name
    folder.mkdir(parents=True)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "model_version": f"{name}@abc",
                "config": {}, "dims": {}, "schema": {}, "ids": {}, "files": {}, "data": {"name": data_name}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (artifacts / "current").write_text(name + "\n")
    return folder


@pytest.mark.parametrize("command", [["evaluate"], ["evaluate", "--artifact", "{model}"],
                                     ["evaluate", "--artifact", "{current}"], ["replay"]])
def test_data_other_than_the_models_is_refused(command, home, tmp_path):
    model = fake_model(tmp_path / "artifacts", "synthetic:random")
    command = [c.format(model=model, current=model.parent / "current") for c in command]
    line = error_line(recsys(*command, "--data", "ml-100k", env=home))
    assert line == ("recsys: error: model m1@abc was trained on synthetic, not ml-100k: pass --data synthetic, "
                    "or --allow-other-data to use it with ml-100k anyway")
    allowed = error_line(recsys(*command, "--data", "ml-100k", "--allow-other-data", env=home))
    assert "was trained on" not in allowed and "recsys data download ml-100k" in allowed  # checked no more


def test_titles_from_is_checked_against_the_model_that_answered(tmp_path):
    from stream_app.commands.datacheck import check_same_data, model_manifest
    from stream_app.errors import DataMismatchError

    fake_model(tmp_path, "ml-100k:u1", name="old")
    fake_model(tmp_path, "synthetic:random", name="new")  # current
    assert model_manifest(tmp_path)["model_version"] == "new@abc"
    answered = model_manifest(tmp_path, "old@abc")
    assert answered["model_version"] == "old@abc"
    check_same_data(answered, "ml-100k", allow=False, flag="--titles-from")
    refusal = "trained on synthetic, not ml-100k: pass --titles-from synthetic, or --allow-other-data"
    with pytest.raises(DataMismatchError, match=refusal):
        check_same_data(model_manifest(tmp_path, "new@abc"), "ml-100k", allow=False, flag="--titles-from")
    check_same_data(model_manifest(tmp_path, "new@abc"), "ml-100k", allow=True)
    assert model_manifest(tmp_path, "elsewhere@abc") is None  # a model we do not have: not checked
    assert model_manifest(tmp_path / "empty") is None


@pytest.mark.parametrize("flags, fix", [
    (["--rounds", "0"], "--rounds must be at least 1, not 0"),
    (["--epochs-per-round", "0"], "invalid hyperparameter: steps_per_round must be >= 0 and epochs_per_round > 0"),
    (["--m-records", "99"], "invalid hyperparameter: m_records must be in 1..64"),
    (["--config", "/nonexistent/config.json"], "--config /nonexistent/config.json: No such file"),
    (["--synthetic-users", "1"], "too little data to train on"),
])
def test_training_refuses_what_cannot_train(flags, fix, home, tmp_path):
    line = error_line(recsys("train", "--data", "synthetic", "--out", str(tmp_path / "m"), "--quiet", *flags,
                             env=home))
    assert fix in line
    assert not (tmp_path / "m").exists()  # no untrained artifact
    if "too little" in fix:
        assert "use --synthetic-users and --synthetic-items (e.g. 50 each)" in line


def test_second_worker_on_a_taken_web_port(home):
    import socket

    with socket.socket() as listener:  # what a first worker's web server holds
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        line = error_line(recsys("worker", env={**home, "RECSYS_WEB_PORT": str(port)}, timeout=30))
    assert f"port {port} is already in use" in line
    assert "RECSYS_WEB_PORT" in line and "RECSYS_STORE_DIR" in line


def test_worker_without_a_broker(home):
    from stream_app.broker import free_port

    closed = free_port()  # nothing listens there
    env = {**home, "RECSYS_BROKER_URL": f"kafka://127.0.0.1:{closed}", "RECSYS_WEB_PORT": str(free_port())}
    line = error_line(recsys("worker", env=env, timeout=30))
    assert f"no Kafka broker answers at 127.0.0.1:{closed}" in line
    assert "recsys broker --detach" in line and "RECSYS_BROKER_URL" in line


def test_a_bad_setting_in_the_environment(home):
    line = error_line(recsys("settings", "--current", env={**home, "RECSYS_PARTITIONS": "four"}))
    assert line == "recsys: error: RECSYS_PARTITIONS='four' is not a valid int: fix or unset it"


def test_a_bad_flag_is_one_line_not_the_usage():
    line = error_line(recsys("train", "--rounds", "abc"))
    assert line == "recsys: error: argument --rounds: invalid int value: 'abc' (see `recsys train --help`)"
