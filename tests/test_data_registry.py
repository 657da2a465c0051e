"""Dataset registry: mirror (folder, zip, file:// URL), cache, download from a local file:// base URL."""

import hashlib
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from stream_app.cli import main
from stream_app.data import registry
from stream_app.data.registry import (
    ChecksumError,
    download_dataset,
    load_dataset,
    load_split,
    resolve_dataset_dir,
)
from stream_app.errors import DataNotFoundError, RecsysError
from stream_app.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"


def make_zip(fixture: str, zip_path: Path, folder: str) -> str:
    """Zip tests/fixtures/<fixture> as <folder>/... (like the GroupLens zips); return its sha256."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted((FIXTURES / fixture).iterdir()):
            archive.write(path, f"{folder}/{path.name}")
    return hashlib.sha256(zip_path.read_bytes()).hexdigest()


def trust(monkeypatch, name: str, sha256: str | None) -> None:
    """Make the registry expect `sha256` for `name`.zip (the real checksums are of the real zips)."""
    monkeypatch.setitem(registry.DATASETS, name, replace(registry.DATASETS[name], sha256=sha256))


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    """Settings built from the environment (the CLI) must not see the caller's mirror or cache."""
    monkeypatch.delenv("RECSYS_DATA_MIRROR", raising=False)
    monkeypatch.delenv("RECSYS_DATA_CACHE", raising=False)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def settings_for(cache, mirror="") -> Settings:
    return Settings(data_cache=str(cache), data_mirror=str(mirror))


def cache_leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ----------------------------------------------------------------------------- resolving


def test_registry_knows_the_movielens_zips():
    assert set(registry.DATASETS) == {"ml-100k", "ml-1m", "ml-1m-ratings", "ml-10m", "ml-20m", "ml-25m",
                                      "ml-latest-small"}
    assert registry.DATASETS["ml-10m"].folder == "ml-10M100K"
    assert registry.DATASETS["ml-1m"].url == "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
    for info in registry.DATASETS.values():
        assert info.sha256 is None or len(info.sha256) == 64


def test_mirror_folder_is_used_in_place(tmp_path, cache):
    mirror = tmp_path / "mirror"
    shutil.copytree(FIXTURES / "ml-100k", mirror / "ml-100k")
    settings = settings_for(cache, mirror)
    assert resolve_dataset_dir("ml-100k", settings) == mirror / "ml-100k"
    assert load_dataset("ml-100k", settings).n_users == 4
    assert not cache.exists()


def test_mirror_folder_may_use_the_zip_folder_name(tmp_path, cache):
    shutil.copytree(FIXTURES / "ml-10m", tmp_path / "mirror" / "ml-10M100K")
    data = load_dataset("ml-10m", settings_for(cache, tmp_path / "mirror"))
    assert len(data) == 4


def test_mirror_as_file_url_and_relative_path(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    shutil.copytree(FIXTURES / "ml-1m", mirror / "ml-1m")
    assert resolve_dataset_dir("ml-1m", settings_for(cache, mirror.as_uri())) == mirror / "ml-1m"
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset_dir("ml-1m", settings_for(cache, "mirror")) == mirror / "ml-1m"


def test_mirror_with_other_url_scheme_is_refused(cache):
    with pytest.raises(RecsysError, match="file:// URLs"):
        resolve_dataset_dir("ml-1m", settings_for(cache, "https://example.invalid/data"))


def test_mirror_zip_is_verified_and_extracted_into_the_cache(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    trust(monkeypatch, "ml-1m", make_zip("ml-1m", mirror / "ml-1m.zip", "ml-1m"))
    settings = settings_for(cache, mirror)
    assert resolve_dataset_dir("ml-1m", settings) == cache / "ml-1m"
    assert (cache / "ml-1m" / "ratings.dat").is_file()
    assert cache_leftovers(cache) == ["ml-1m"]  # no temp dirs left behind
    (mirror / "ml-1m.zip").unlink()  # from now on, a cache hit
    assert load_dataset("ml-1m", settings).n_users == 4


def test_mirror_zip_with_bad_checksum_is_refused(tmp_path, cache, monkeypatch):
    mirror = tmp_path / "mirror"
    make_zip("ml-1m", mirror / "ml-1m.zip", "ml-1m")
    trust(monkeypatch, "ml-1m", "0" * 64)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        resolve_dataset_dir("ml-1m", settings_for(cache, mirror))
    assert cache_leftovers(cache) == []


def test_mirror_zip_without_known_checksum_needs_no_verify(tmp_path, cache):
    mirror = tmp_path / "mirror"
    make_zip("ml-10m", mirror / "ml-10m.zip", "ml-10M100K")
    settings = settings_for(cache, mirror)
    with pytest.raises(ChecksumError, match="--no-verify"):
        resolve_dataset_dir("ml-10m", settings)
    assert download_dataset("ml-10m", settings, verify=False) == cache / "ml-10m"
    assert resolve_dataset_dir("ml-10m", settings) == cache / "ml-10m"


def test_cache_hit(cache):
    shutil.copytree(FIXTURES / "ml-latest-small", cache / "ml-latest-small")
    data = load_dataset("ml-latest-small", settings_for(cache))
    assert data.name == "ml-latest-small" and len(data) == 5


def test_incomplete_cache_folder_is_not_a_hit(cache):
    (cache / "ml-1m").mkdir(parents=True)
    with pytest.raises(DataNotFoundError):
        resolve_dataset_dir("ml-1m", settings_for(cache))


def test_missing_data_error_names_both_fixes(tmp_path, cache):
    with pytest.raises(DataNotFoundError) as err:
        resolve_dataset_dir("ml-1m", settings_for(cache, tmp_path / "empty-mirror"))
    message = str(err.value)
    assert "recsys data download ml-1m" in message
    assert "set RECSYS_DATA_MIRROR to a folder holding ml-1m/ or ml-1m.zip" in message
    assert "shared/data" not in message  # no path that only the team has


def test_unknown_dataset_name(cache):
    with pytest.raises(ValueError, match="known: ml-100k"):
        resolve_dataset_dir("ml-3m", settings_for(cache))


# ----------------------------------------------------------------------------- downloading


@pytest.fixture
def server(tmp_path):
    """A folder served as the GroupLens base URL through file://."""
    return tmp_path / "server"


def test_download_from_file_url(server, cache, monkeypatch):
    trust(monkeypatch, "ml-100k", make_zip("ml-100k", server / "ml-100k.zip", "ml-100k"))
    path = download_dataset("ml-100k", settings_for(cache), progress=False, base_url=server.as_uri())
    assert path == cache / "ml-100k"
    assert cache_leftovers(cache) == ["ml-100k"]  # temp zip and temp dir removed
    assert load_dataset("ml-100k", settings_for(cache)).n_items == 5
    # already cached: no second download (the server may be gone)
    shutil.rmtree(server)
    assert download_dataset("ml-100k", settings_for(cache), base_url=server.as_uri()) == path


def test_download_uses_module_base_url(server, cache, monkeypatch):
    trust(monkeypatch, "ml-1m", make_zip("ml-1m", server / "ml-1m.zip", "ml-1m"))
    monkeypatch.setattr(registry, "GROUPLENS_URL", server.as_uri())
    assert download_dataset("ml-1m", settings_for(cache), progress=False) == cache / "ml-1m"


def test_download_with_bad_checksum_removes_the_temp_file(server, cache, monkeypatch):
    make_zip("ml-100k", server / "ml-100k.zip", "ml-100k")
    trust(monkeypatch, "ml-100k", "f" * 64)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        download_dataset("ml-100k", settings_for(cache), progress=False, base_url=server.as_uri())
    assert cache_leftovers(cache) == []


def test_download_without_known_checksum(server, cache):
    make_zip("ml-10m", server / "ml-10m.zip", "ml-10M100K")
    with pytest.raises(ChecksumError, match="no known sha256.*--no-verify"):
        download_dataset("ml-10m", settings_for(cache), progress=False, base_url=server.as_uri())
    path = download_dataset("ml-10m", settings_for(cache), verify=False, progress=False,
                            base_url=server.as_uri())
    assert path == cache / "ml-10m" and (path / "ratings.dat").is_file()


def test_download_of_missing_url_is_a_clear_error(server, cache, monkeypatch):
    trust(monkeypatch, "ml-1m", "0" * 64)
    with pytest.raises(RecsysError, match="could not download.*offline.*RECSYS_DATA_MIRROR"):
        download_dataset("ml-1m", settings_for(cache), progress=False, base_url=server.as_uri())
    assert cache_leftovers(cache) == []


def test_download_zip_without_the_dataset_folder(server, cache, monkeypatch):
    trust(monkeypatch, "ml-1m", make_zip("ml-10m", server / "ml-1m.zip", "something-else"))
    with pytest.raises(RecsysError, match="has no ml-1m/ratings.dat"):
        download_dataset("ml-1m", settings_for(cache), progress=False, base_url=server.as_uri())
    assert cache_leftovers(cache) == []


def test_download_copies_a_mirror_folder(tmp_path, cache):
    shutil.copytree(FIXTURES / "ml-1m", tmp_path / "mirror" / "ml-1m")
    path = download_dataset("ml-1m", settings_for(cache, tmp_path / "mirror"), progress=False)
    assert path == cache / "ml-1m" and (path / "users.dat").is_file()


# ----------------------------------------------------------------------------- loading and splits


def test_load_split_ml100k_default_u1(tmp_path, cache):
    shutil.copytree(FIXTURES / "ml-100k", tmp_path / "mirror" / "ml-100k")
    settings = settings_for(cache, tmp_path / "mirror")
    split = load_split("ml-100k", settings=settings)
    assert split.name == "u1" and (len(split.train), len(split.test)) == (8, 3)
    random = load_split("ml-100k", "random", settings)
    assert len(random.train) + len(random.test) == 11


def test_load_split_random_and_none(tmp_path, cache):
    shutil.copytree(FIXTURES / "ml-1m", tmp_path / "mirror" / "ml-1m")
    settings = settings_for(cache, tmp_path / "mirror")
    split = load_split("ml-1m", settings=settings, seed=3)
    assert len(split.train) + len(split.test) == 7
    none = load_split("ml-1m", "none", settings)
    assert len(none.train) == 7 and len(none.test) == 0
    with pytest.raises(ValueError, match="valid: random, none"):
        load_split("ml-1m", "u1", settings)


def test_load_synthetic(cache):
    data = load_dataset("synthetic", settings_for(cache), n_users=30, n_items=20, seed=1)
    assert data.n_users == 30 and data.n_items == 20
    split = load_split("synthetic", settings=settings_for(cache))
    assert split.train.name == "synthetic" and len(split.test) > 0
    with pytest.raises(TypeError):
        load_dataset("ml-1m", settings_for(cache), n_users=3)


# ----------------------------------------------------------------------------- CLI


def test_cli_list_info_download(tmp_path, cache, capsys, monkeypatch):
    shutil.copytree(FIXTURES / "ml-100k", tmp_path / "mirror" / "ml-100k")
    flags = ["--data-cache", str(cache), "--data-mirror", str(tmp_path / "mirror")]
    assert main(["data", "list", *flags]) == 0
    listing = capsys.readouterr().out
    assert "ml-100k" in listing and "folder" in listing and "ml-25m" in listing

    assert main(["data", "info", "ml-100k", *flags]) == 0
    info = capsys.readouterr().out
    assert "4 users, 5 items, 11 ratings" in info and "split u1: train 8 ratings, test 3 ratings" in info

    assert main(["data", "download", "ml-100k", *flags]) == 0
    assert (cache / "ml-100k" / "u.data").is_file()
    assert main(["data", "download", "ml-100k", *flags]) == 0
    assert "already in the cache" in capsys.readouterr().out


def test_cli_errors_are_one_line(cache, capsys):
    assert main(["data", "info", "ml-1m", "--data-cache", str(cache)]) == 2
    assert "recsys data download ml-1m" in capsys.readouterr().err
    assert main(["data", "info", "synthetic", "--split", "u1"]) == 2
    assert "valid: random, none" in capsys.readouterr().err
