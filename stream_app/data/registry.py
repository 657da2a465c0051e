"""Known datasets, where to find them (mirror, then cache), and how to download them.

Lookup order of `resolve_dataset_dir`: the mirror (`RECSYS_DATA_MIRROR`, a folder or file:// URL
holding `NAME/` or `NAME.zip`; a zip there is verified and extracted into the cache), then the cache
(`RECSYS_DATA_CACHE/NAME/`). GroupLens does not allow redistribution, so nothing is ever bundled.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from stream_app.data.dataset import RatingData, Split, random_split
from stream_app.data.movielens import (
    ML100K_SPLITS,
    load_csv_dataset,
    load_ml1m,
    load_ml1m_ratings,
    load_ml10m,
    load_ml100k,
    load_ml100k_split,
)
from stream_app.errors import DataNotFoundError, RecsysError, UnknownNameError
from stream_app.settings import Settings

# Base of the download URLs; tests point it (or `download_dataset(base_url=...)`) at a file:// folder.
GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens"
SYNTHETIC = "synthetic"
RANDOM_SPLIT, NO_SPLIT = "random", "none"
_CHUNK = 1 << 20


class ChecksumError(RecsysError):
    """A zip does not match its known sha256, or has no known sha256 and verification was asked."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sha256: str | None  # of the official zip; None = unknown, download needs --no-verify
    folder: str  # top folder inside the zip
    marker: str  # ratings file whose presence marks a complete dataset folder
    loader: Callable[[Path], RatingData]
    about: str
    # mirror_only: not published by GroupLens (no download); the mirror's folder is the only source,
    # checked file by file against files_sha256 ((file name, sha256), ...) whenever it is used.
    mirror_only: bool = False
    files_sha256: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return f"{GROUPLENS_URL}/{self.name}.zip"


# ratings.csv of the ml-1m-ratings rebuild, from the table in its README (shared/data/ml-1m-ratings).
ML1M_RATINGS_SHA256 = "a90b4358209912725356949c420c7db533243f1f729b024ef65acb7cb9f96795"

# sha256 values: tensorflow/datasets, tensorflow_datasets/url_checksums/movielens.txt.
# ml-10m is not listed there (GroupLens publishes only an MD5), so it is unverifiable here.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("ml-100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
                    "ml-100k", "u.data", load_ml100k, "100K ratings, 943 users, 1682 movies, user data"),
        DatasetInfo("ml-1m", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
                    "ml-1m", "ratings.dat", load_ml1m, "1M ratings, 6040 users, user data"),
        DatasetInfo("ml-1m-ratings", None, "ml-1m-ratings", "ratings.csv", load_ml1m_ratings,
                    "ML-1M ratings rebuilt without timestamps (mirror only), user data", mirror_only=True,
                    files_sha256=(("ratings.csv", ML1M_RATINGS_SHA256),)),
        DatasetInfo("ml-10m", None, "ml-10M100K", "ratings.dat", load_ml10m,
                    "10M ratings, half stars, no user data"),
        DatasetInfo("ml-20m", "96f243c338a8665f6bcc89c53edf6ee39162a846940de6b7c8c48aeada765ff3",
                    "ml-20m", "ratings.csv", partial(load_csv_dataset, name="ml-20m"),
                    "20M ratings, half stars, no user data"),
        DatasetInfo("ml-25m", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa",
                    "ml-25m", "ratings.csv", partial(load_csv_dataset, name="ml-25m"),
                    "25M ratings, half stars, no user data"),
        DatasetInfo("ml-latest-small", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
                    "ml-latest-small", "ratings.csv", partial(load_csv_dataset, name="ml-latest-small"),
                    "~100K ratings, half stars, no user data (changes over time)"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise UnknownNameError(f"unknown dataset {name!r}; known: {', '.join([*DATASETS, SYNTHETIC])} "
                               "(see `recsys data list`)")
    return DATASETS[name]


# ----------------------------------------------------------------------------- locating


def mirror_root(settings: Settings) -> Path | None:
    """The mirror folder (relative paths are relative to the current dir), or None if unset."""
    raw = settings.data_mirror.strip()
    if not raw:
        return None
    if "://" in raw or raw.startswith("file:"):
        parsed = urlparse(raw)
        if parsed.scheme != "file":
            raise RecsysError(f"RECSYS_DATA_MIRROR={raw!r}: only folders and file:// URLs are supported")
        raw = urllib.request.url2pathname(parsed.path)
    return Path(raw).expanduser().resolve()


def cache_dir(name: str, settings: Settings) -> Path:
    return Path(settings.data_cache).expanduser().resolve() / name


def find_in_mirror(name: str, settings: Settings) -> Path | None:
    """`NAME/` (or the zip's own folder name, e.g. ml-10M100K/) or `NAME.zip` in the mirror."""
    info, mirror = dataset_info(name), mirror_root(settings)
    if mirror is None:
        return None
    for folder in dict.fromkeys((name, info.folder)):
        if _is_complete(mirror / folder, info):
            return mirror / folder
    if info.mirror_only:
        return None  # a folder only: there is no official zip to verify
    return mirror / f"{name}.zip" if (mirror / f"{name}.zip").is_file() else None


def find_in_cache(name: str, settings: Settings) -> Path | None:
    path = cache_dir(name, settings)
    return path if _is_complete(path, dataset_info(name)) else None


def resolve_dataset_dir(name: str, settings: Settings | None = None) -> Path:
    """Folder holding the files of `name`: mirror folder, mirror zip (extracted to the cache), cache."""
    settings = settings or Settings.from_env()
    info = dataset_info(name)
    source = find_in_mirror(name, settings)
    if source is not None and source.is_dir():
        return _verify_folder(info, source)
    cached = find_in_cache(name, settings)
    if cached is not None:
        return cached  # a mirror zip already extracted (and verified) earlier
    if source is not None:
        _verify_file(info, source, verify=True)
        return _extract(source, info, cache_dir(name, settings))
    where = f"the cache ({cache_dir(name, settings)})"
    if settings.data_mirror:
        where += f" or the mirror ({mirror_root(settings)})"
    if info.mirror_only:
        raise DataNotFoundError(_mirror_only_message(info, settings, where))
    raise DataNotFoundError(f"dataset {name} is not in {where}: {how_to_get(name)}")


def how_to_get(name: str) -> str:
    """The fix for a dataset that is not there (one line)."""
    return (f"run `recsys data download {name}`, or set RECSYS_DATA_MIRROR to a folder holding "
            f"{name}/ or {name}.zip")


# ----------------------------------------------------------------------------- downloading


def download_dataset(name: str, settings: Settings | None = None, verify: bool = True,
                     progress: bool = True, base_url: str | None = None) -> Path:
    """Put `name` into the cache (from the mirror if it has it, else from GroupLens); return its folder."""
    settings = settings or Settings.from_env()
    info = dataset_info(name)
    target = cache_dir(name, settings)
    if _is_complete(target, info):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    source = find_in_mirror(name, settings)
    if source is not None and source.is_dir():
        return _copy_folder(_verify_folder(info, source) if verify else source, info, target)
    if info.mirror_only:
        raise DataNotFoundError(_mirror_only_message(info, settings, f"the mirror ({mirror_root(settings)})"))
    if source is not None:
        _verify_file(info, source, verify)
        return _extract(source, info, target)
    if verify and info.sha256 is None:
        _check_digest(info, None, info.url, verify)  # refuse before spending time downloading
    url = f"{(base_url or GROUPLENS_URL).rstrip('/')}/{name}.zip"
    zip_path, digest = _fetch(url, target.parent, progress)
    try:
        _check_digest(info, digest, url, verify)
        return _extract(zip_path, info, target)
    finally:
        zip_path.unlink(missing_ok=True)


def _fetch(url: str, folder: Path, progress: bool) -> tuple[Path, str]:
    """Stream `url` to a temp file in `folder`, hashing on the way."""
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".download-", suffix=".zip", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=not progress)
            with bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as exc:  # URLError and HTTPError are OSErrors
        Path(tmp).unlink(missing_ok=True)
        name = Path(urlparse(url).path).stem
        raise RecsysError(f"could not download {url} ({exc}); offline? set RECSYS_DATA_MIRROR to a folder "
                          f"holding {name}/ or {name}.zip") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp), digest.hexdigest()


def _mirror_only_message(info: DatasetInfo, settings: Settings, where: str) -> str:
    return (f"dataset {info.name} is not in {where}, and it cannot be downloaded: GroupLens does not publish it "
            f"({info.about}): set RECSYS_DATA_MIRROR to a folder holding {info.name}/ with "
            f"{', '.join(f for f, _ in info.files_sha256)}")


def _verify_folder(info: DatasetInfo, folder: Path) -> Path:
    """Check the folder's files listed in info.files_sha256; return the folder."""
    for file, expected in info.files_sha256:
        got = _sha256_file(folder / file)
        if got != expected:
            raise ChecksumError(f"sha256 mismatch for {folder / file}: expected {expected}, got {got}; the file "
                                f"is corrupt or not the {info.name} build this project knows")
    return folder


def _verify_file(info: DatasetInfo, path: Path, verify: bool) -> None:
    if verify:
        _check_digest(info, _sha256_file(path) if info.sha256 else None, path, verify)


def _check_digest(info: DatasetInfo, digest: str | None, source, verify: bool) -> None:
    if not verify:
        return
    if info.sha256 is None:
        raise ChecksumError(
            f"no known sha256 for {info.name}.zip, so {source} cannot be verified; "
            f"run `recsys data download {info.name} --no-verify` to accept it unverified"
        )
    if digest != info.sha256:
        raise ChecksumError(
            f"sha256 mismatch for {source}: expected {info.sha256}, got {digest}; the file is corrupt "
            f"or not the official GroupLens zip (nothing was extracted)"
        )


def _extract(zip_path: Path, info: DatasetInfo, target: Path) -> Path:
    """Extract into a temp dir beside `target`, then rename: the cache never holds a partial folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(zip_path) as archive:
                archive.extractall(tmp)
        except zipfile.BadZipFile as exc:
            raise RecsysError(f"{zip_path} is not a valid zip file: {exc}") from None
        root = next((p for p in (tmp / info.folder, tmp / info.name, tmp) if _is_complete(p, info)), None)
        if root is None:
            raise RecsysError(f"{zip_path} has no {info.folder}/{info.marker}")
        return _publish(root, info, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_folder(source: Path, info: DatasetInfo, target: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{info.name}-", dir=target.parent))
    try:
        shutil.copytree(source, tmp / info.name)
        return _publish(tmp / info.name, info, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(ready: Path, info: DatasetInfo, target: Path) -> Path:
    try:
        ready.rename(target)
    except OSError as exc:
        if not _is_complete(target, info):  # else another process finished first: keep theirs
            message = f"{target} exists but is incomplete (no {info.marker}); remove it and retry"
            raise RecsysError(message) from exc
    return target


def _is_complete(folder: Path, info: DatasetInfo) -> bool:
    return (folder / info.marker).is_file()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- loading


def load_dataset(name: str, settings: Settings | None = None, **synthetic_kwargs) -> RatingData:
    """A known dataset by name; "synthetic" builds `make_synthetic(**synthetic_kwargs)` instead."""
    if name == SYNTHETIC:
        from stream_app.data.synthetic import make_synthetic

        return make_synthetic(**synthetic_kwargs)
    if synthetic_kwargs:
        raise TypeError(f"options {sorted(synthetic_kwargs)} only apply to the synthetic dataset")
    return dataset_info(name).loader(resolve_dataset_dir(name, settings))


def split_names(name: str) -> tuple[str, ...]:
    """Valid `split` values of `load_split` for a dataset; the first is the default."""
    return (*ML100K_SPLITS, RANDOM_SPLIT, NO_SPLIT) if name == "ml-100k" else (RANDOM_SPLIT, NO_SPLIT)


def load_split(name: str, split: str | None = None, settings: Settings | None = None, seed: int = 0,
               data: RatingData | None = None) -> Split:
    """ml-100k: official u1..u5/ua/ub splits (default u1). Any dataset: "random" = 90/10 random
    rating split with `seed` (the ML-1M protocol, default elsewhere), "none" = empty test set.
    `data`: the already loaded full dataset, to avoid loading it twice."""
    if name != SYNTHETIC:
        dataset_info(name)  # an unknown name is named as such, not as an unknown split
    split = split or split_names(name)[0]
    if split not in split_names(name):
        raise UnknownNameError(f"unknown split {split!r} for {name}; valid: {', '.join(split_names(name))}")
    if split in ML100K_SPLITS:
        return load_ml100k_split(resolve_dataset_dir(name, settings), split, full=data)
    data = data if data is not None else load_dataset(name, settings)
    if split == RANDOM_SPLIT:
        return random_split(data, 0.1, seed)
    return Split(data, data.subset(np.zeros(len(data), dtype=bool)), name=NO_SPLIT)
