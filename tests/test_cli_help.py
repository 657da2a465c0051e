"""`recsys --help` pages: each command lists only the settings it uses, every hyperparameter flag has help and
shows its default; no progress-bar flood when stderr is not a terminal."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from stream_app.cli import build_parser
from stream_app.commands.common import CONFIG_HELP, show_progress
from stream_app.core.config import ModelConfig

WORKER_ONLY = ["--window-user", "--batch-timeout", "--web-port", "--store-dir", "--session-timeout",
               "--standby-replicas", "--model-poll-interval", "--commit-stall-timeout", "--fetch-max-wait"]


def subparser(name: str):
    parser = build_parser()
    action = next(a for a in parser._actions if hasattr(a, "choices") and isinstance(a.choices, dict))
    return action.choices[name]


def flags(name: str) -> set[str]:
    return {s for a in subparser(name)._actions for s in a.option_strings}


@pytest.mark.parametrize("command, uses", [
    ("tail", ["--broker-url"]),
    ("recommend", ["--broker-url", "--topic-requests", "--topic-recommendations", "--top-n", "--data-mirror"]),
    ("replay", ["--broker-url", "--topic-ratings", "--topic-users", "--topic-items", "--data-mirror", "--seed"]),
])
def test_client_commands_list_only_their_settings(command, uses):
    have = flags(command)
    assert set(uses) <= have
    assert not have & set(WORKER_ONLY), sorted(have & set(WORKER_ONLY))
    assert len([f for f in have if f.startswith("--topic-")]) <= 3


def test_the_worker_still_has_its_settings():
    assert set(WORKER_ONLY) <= flags("worker")


@pytest.mark.parametrize("command", ["train", "retrain", "evaluate"])
def test_every_hyperparameter_flag_has_help_and_its_default(command):
    defaults = {f.name: f.default for f in fields(ModelConfig)}
    seen = 0
    for action in subparser(command)._actions:
        if action.dest.startswith("cfg_"):
            name = action.dest[4:]
            assert action.help and action.help.startswith(CONFIG_HELP[name])
            assert action.help.endswith(f"(default: {defaults[name]})"), action.help
            seen += 1
    assert seen == len(defaults) - 1  # all but seed (a setting: --seed)


def test_every_config_field_has_a_help_line():
    assert {f.name for f in fields(ModelConfig)} - {"seed"} == set(CONFIG_HELP)


def test_every_flag_of_the_data_commands_has_help():
    for command in ("train", "evaluate", "replay", "recommend", "tail", "retrain"):
        for action in subparser(command)._actions:
            assert action.help, f"recsys {command} {action.option_strings or action.dest} has no help"


def test_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path):
    assert not show_progress()  # pytest captures stderr
    done = subprocess.run([sys.executable, "-m", "stream_app.cli", "train", "--data", "synthetic",
                           "--synthetic-users", "40", "--synthetic-items", "30", "--rounds", "2",
                           "--steps-per-round", "3", "--n-dim", "4", "--hidden", "8", "--predictor-hidden", "8",
                           "--out", str(tmp_path / "m"), "--no-promote"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\r" not in done.stderr and "\r" not in done.stdout
    assert "artifact written to" in done.stdout
