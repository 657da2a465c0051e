"""The README and docs/ stay true: the first commands, CI's agreement with them, the settings table generated
from the code, links that lead somewhere. (tests/test_readme_walkthrough.py runs the walk-through itself.)"""

import re
from pathlib import Path

from stream_app.settings import settings_table

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
SETTINGS_DOC = (ROOT / "docs" / "settings.md").read_text()


def test_first_lines_give_the_demo_and_test_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].endswith("recsys demo") and "pip install torch==2.13.0" in block[0]
    assert block[1].endswith("python -m pytest -q") and "pip install torch==2.13.0" in block[1]


def test_the_readme_says_how_to_get_the_cpu_build_of_torch_elsewhere():
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in README
    assert "https://download.pytorch.org/whl/cpu" in (ROOT / "Dockerfile").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci and "pip install --quiet torch==2.13.0" in ci


def test_settings_table_is_current():
    assert settings_table() in SETTINGS_DOC, "regenerate docs/settings.md's table from `recsys settings`"


def test_readme_is_a_front_page():
    assert len(README.splitlines()) <= 200
    assert "../shared" not in README, "the README must not point outside the repository"
    assert "## Five-minute walk-through" in README


def test_docs_and_readme_mention_nothing_outside_the_repository():
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "results" / "README.md"]:
        assert "../shared" not in path.read_text(), path


def test_relative_links_lead_to_files_of_the_repository():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "bench" / "results" / "README.md"]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_doc_page_is_linked_from_the_readme():
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, page.name
