"""User errors of `recsys`: exit status 2 and one line on stderr that names the fix, no traceback
(unless `recsys --debug`). Each case runs the CLI as a subprocess, as a user would."""

from __future__ import annotations

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
