"""ml-1m-ratings (the untimed ML-1M rebuild): mirror-only loading with a checked ratings.csv, side
data, the 90/10 random split, and the refusal of time-ordered protocols. Fixture rows are invented."""

import hashlib
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stream_app.baselines import baseline_factories
from stream_app.cli import main
from stream_app.data import registry
from stream_app.data.dataset import NO_TIME
from stream_app.data.features import encode_context
from stream_app.data.registry import ChecksumError, download_dataset, load_dataset, load_split
from stream_app.errors import DataNotFoundError, RecsysError
from stream_app.evaluation import protocols
from stream_app.settings import Settings

FIXTURE = Path(__file__).parent / "fixtures" / "ml-1m-ratings"
NAME = "ml-1m-ratings"


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A mirror holding the invented fixture, trusted by its own sha256 (the real one is of the real file)."""
    monkeypatch.delenv("RECSYS_DATA_MIRROR", raising=False)
    monkeypatch.delenv("RECSYS_DATA_CACHE", raising=False)
    shutil.copytree(FIXTURE, tmp_path / "mirror" / NAME)
    digest = hashlib.sha256((FIXTURE / "ratings.csv").read_bytes()).hexdigest()
    monkeypatch.setitem(registry.DATASETS, NAME,
                        replace(registry.DATASETS[NAME], files_sha256=(("ratings.csv", digest),)))
    return tmp_path / "mirror"


def settings_for(tmp_path, mirror="") -> Settings:
    return Settings(data_cache=str(tmp_path / "cache"), data_mirror=str(mirror))


def test_the_real_checksum_is_the_readme_one():
    assert dict(registry.DATASETS[NAME].files_sha256)["ratings.csv"] == (
        "a90b4358209912725356949c420c7db533243f1f729b024ef65acb7cb9f96795")
    assert registry.DATASETS[NAME].mirror_only


def test_loads_untimed_ratings_with_side_data(tmp_path, mirror):
    data = load_dataset(NAME, settings_for(tmp_path, mirror))
    assert len(data) == 7 and data.n_users == 4
    assert not data.timed and np.all(data.ts == NO_TIME)
    # the catalogue: movies.dat (4, one never rated) plus the placeholder id of a movie without a MovieID
    assert data.item_ids == ["1", "2", "3", "4", "100007"]
    assert data.items[data.item_ids.index("100007")] == {}
    assert data.items[0]["genres"] == ["Comedy", "Drama"] and data.items[0]["year"] == 1996
    assert data.users[1]["gender"] == "F" and data.users[1]["occupation"] == "programmer"
    assert sorted(zip(data.user.tolist(), data.item.tolist(), data.rating.tolist(), strict=True))[0] == (0, 0, 4.0)
    assert not data.subset(data.rating > 3).timed


def test_default_split_is_random_90_10_and_stays_untimed(tmp_path, mirror):
    split = load_split(NAME, settings=settings_for(tmp_path, mirror), seed=0)
    assert split.name == "random10-s0"
    assert len(split.train) + len(split.test) == 7
    assert not split.train.timed and not split.test.timed


def test_wrong_ratings_file_is_refused(tmp_path, mirror):
    (mirror / NAME / "ratings.csv").chmod(0o644)
    with open(mirror / NAME / "ratings.csv", "a") as f:
        f.write("4,1,3\n")
    with pytest.raises(ChecksumError, match="sha256 mismatch .*ratings.csv"):
        load_dataset(NAME, settings_for(tmp_path, mirror))


def test_missing_from_the_mirror_says_it_cannot_be_downloaded(tmp_path):
    settings = settings_for(tmp_path, tmp_path / "empty-mirror")
    for attempt in (lambda: load_dataset(NAME, settings), lambda: download_dataset(NAME, settings)):
        with pytest.raises(DataNotFoundError, match="cannot be downloaded") as err:
            attempt()
        assert "RECSYS_DATA_MIRROR" in str(err.value)


def test_download_copies_the_checked_mirror_folder(tmp_path, mirror):
    path = download_dataset(NAME, settings_for(tmp_path, mirror))
    assert path == tmp_path / "cache" / NAME and (path / "ratings.csv").is_file()


def test_time_ordered_protocols_refuse_untimed_data(tmp_path, mirror):
    split = load_split(NAME, settings=settings_for(tmp_path, mirror), seed=0)
    baselines = baseline_factories(["bias-only"])
    for run in (lambda: protocols.foldin(split, "user", [1], baselines=baselines, log=lambda *a: None),
                lambda: protocols.prequential(split, baselines=baselines, log=lambda *a: None)):
        with pytest.raises(RecsysError, match="has no timestamps"):
            run()
    assert protocols.warm(split, baselines=baselines, log=lambda *a: None)["systems"]["bias-only"]["n"] == len(
        split.test)


def test_cli_refusal_is_one_line(tmp_path, mirror, capsys):
    flags = ["--data", NAME, "--data-cache", str(tmp_path / "cache"), "--data-mirror", str(mirror)]
    assert main(["evaluate", "--protocol", "prequential", "--no-model", "--baselines", "bias-only", *flags]) == 1
    assert "has no timestamps" in capsys.readouterr().err


def test_no_time_leaves_the_rating_context_empty():
    context = encode_context(np.array([NO_TIME, 1_577_836_800]))
    assert not context[0].any() and context[1].any()


def test_cli_data_info_and_list_know_it_is_untimed_and_checked(tmp_path, mirror, capsys):
    flags = ["--data-cache", str(tmp_path / "cache"), "--data-mirror", str(mirror)]
    assert main(["data", "info", NAME, *flags]) == 0
    info = capsys.readouterr().out
    assert "4 users, 5 items, 7 ratings" in info and "no timestamps" in info
    assert main(["data", "list", *flags]) == 0
    line = next(row for row in capsys.readouterr().out.splitlines() if row.startswith(f"{NAME} "))
    assert line.split()[1:4] == ["folder", "-", "known"]
