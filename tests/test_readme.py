"""The README stays true: its first commands, and the settings table generated from the code."""

from pathlib import Path

from stream_app.settings import settings_table

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_first_lines_give_the_demo_and_test_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].endswith("recsys demo") and "pip install torch==2.13.0" in block[0]
    assert block[1].endswith("python -m pytest -q")


def test_ci_runs_the_readme_test_command():
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "pip install --quiet torch==2.13.0" in ci


def test_settings_table_is_current():
    assert settings_table() in README, "regenerate the README's settings table from `recsys settings`"
