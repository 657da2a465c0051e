"""Loaders of the official GroupLens MovieLens formats (100K, 1M, 10M, and the CSV releases), and of
ml-1m-ratings, a ratings-only rebuild of ML-1M (CSV without timestamps, users.dat and movies.dat).

Every loader returns a `RatingData` whose users and items are remapped to dense indices in
ascending numeric order of their original ids. The item universe is the whole catalog (every
movie of the movie file, rated or not) so that unrated movies can still be recommended from
side data; users are the union of rated users and the user file.

Ratings are parsed with numpy's C parser; only when it fails is the file rescanned in Python,
so that a malformed line is reported as `ValueError("<file>, line <n>: ...")`.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from stream_app.data.dataset import NO_TIME, RatingData, Split

ML100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# users.dat occupation codes, from the ML-1M README.
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)

NO_GENRES = "(no genres listed)"
ENCODING = "latin-1"  # the .dat/u.* files are latin-1; latin-1 also never fails on utf-8 bytes
_RATING_DTYPE = np.dtype([("user", "i8"), ("item", "i8"), ("rating", "f4"), ("ts", "i8")])
_UNTIMED_DTYPE = np.dtype([("user", "i8"), ("item", "i8"), ("rating", "f4")])
_RATING_FIELDS: tuple[tuple[str, Callable], ...] = (
    ("user id", int), ("item id", int), ("rating", float), ("timestamp", int),
)
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_MAX_TABLE_ID = 50_000_000  # above this, remap ids by sorting instead of a lookup table


# ----------------------------------------------------------------------------- public loaders


def load_ml100k(root: str | Path) -> RatingData:
    """MovieLens 100K: u.data, u.user, u.item, u.genre (ratings 1..5)."""
    root = Path(root)
    ratings = _read_ratings(root / "u.data", "\t", scale=(1.0, 5.0))
    return _build("ml-100k", ratings, _ml100k_users(root / "u.user"), _ml100k_items(root), (1.0, 5.0))


def load_ml100k_split(root: str | Path, split: str, full: RatingData | None = None) -> Split:
    """One of the official 100K splits (u1..u5, ua, ub): rows of `<split>.base` / `<split>.test`
    exactly as in the files, with the id maps and side data of `load_ml100k` (pass `full` to reuse it)."""
    if split not in ML100K_SPLITS:
        raise ValueError(f"unknown ml-100k split {split!r}; valid splits: {', '.join(ML100K_SPLITS)}")
    root = Path(root)
    full = full if full is not None else load_ml100k(root)
    train = _rows_from_file(full, root / f"{split}.base")
    test = _rows_from_file(full, root / f"{split}.test")
    return Split(train, test, name=split)


def load_ml1m(root: str | Path) -> RatingData:
    """MovieLens 1M: ratings.dat, users.dat, movies.dat (`::`-separated, ratings 1..5)."""
    root = Path(root)
    ratings = _read_ratings(root / "ratings.dat", "::", scale=(1.0, 5.0))
    users = _ml1m_users(root / "users.dat")
    return _build("ml-1m", ratings, users, _dat_movies(root / "movies.dat"), (1.0, 5.0))


def load_ml10m(root: str | Path) -> RatingData:
    """MovieLens 10M (folder ml-10M100K): ratings.dat and movies.dat, half stars, no user data."""
    root = Path(root)
    ratings = _read_ratings(root / "ratings.dat", "::", scale=(0.5, 5.0))
    return _build("ml-10m", ratings, {}, _dat_movies(root / "movies.dat"), (0.5, 5.0))


def load_ml1m_ratings(root: str | Path) -> RatingData:
    """ml-1m-ratings: the 1,000,209 ML-1M ratings rebuilt without timestamps (ratings.csv with header
    `userId,movieId,rating`) beside the published users.dat and movies.dat. Ratings get ts = NO_TIME
    (the data is untimed: no rating context, no time-ordered protocols). Placeholder movie ids
    (>= 100000, movies whose MovieID is unknown) have no movies.dat row, so no item data."""
    root = Path(root)
    ratings = _read_ratings(root / "ratings.csv", ",", scale=(1.0, 5.0), header=True, timed=False)
    data = _build("ml-1m-ratings", ratings, _ml1m_users(root / "users.dat"), _dat_movies(root / "movies.dat"),
                  (1.0, 5.0))
    return replace(data, timed=False)


def load_csv_dataset(root: str | Path, name: str | None = None) -> RatingData:
    """The CSV releases (ml-20m, ml-25m, ml-latest, ml-latest-small): ratings.csv and movies.csv."""
    root = Path(root)
    ratings = _read_ratings(root / "ratings.csv", ",", scale=(0.5, 5.0), header=True)
    return _build(name or root.name, ratings, {}, _csv_movies(root / "movies.csv"), (0.5, 5.0))


# ----------------------------------------------------------------------------- ratings files


def _read_ratings(path: Path, sep: str, scale: tuple[float, float], header: bool = False,
                  timed: bool = True) -> np.ndarray:
    """user, item, rating, ts columns as a structured array (fast path: np.loadtxt). timed=False: the
    file has no timestamp column; ts is NO_TIME."""
    try:
        with open(path, encoding=ENCODING) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data" for empty files
            # loadtxt only takes one-character delimiters: turn `::` into tabs on the fly.
            lines = (line.replace(sep, "\t") for line in f) if len(sep) > 1 else f
            rows = np.loadtxt(lines, delimiter="\t" if len(sep) > 1 else sep,
                              dtype=_RATING_DTYPE if timed else _UNTIMED_DTYPE,
                              skiprows=int(header), comments=None, ndmin=1)
    except ValueError as exc:
        _raise_for_first_bad_line(path, sep, header, _RATING_FIELDS if timed else _RATING_FIELDS[:3])
        raise ValueError(f"{path}: could not parse the ratings ({exc})") from None
    _check_ratings(path, rows, scale, header)
    if not timed:
        untimed, rows = rows, np.empty(len(rows), _RATING_DTYPE)
        for name in _UNTIMED_DTYPE.names:
            rows[name] = untimed[name]
        rows["ts"] = NO_TIME
    return rows


def _raise_for_first_bad_line(path: Path, sep: str, header: bool, expected=_RATING_FIELDS) -> None:
    """The slow path, run only after the fast parser failed: find and name the bad line."""
    for lineno, fields in _split_lines(path, sep, len(expected), skip_header=header):
        for (what, parse), value in zip(expected, fields, strict=True):
            _parse_field(value, parse, what, path, lineno)


def _check_ratings(path: Path, rows: np.ndarray, scale: tuple[float, float], header: bool) -> None:
    """Out-of-scale or NaN ratings are malformed lines too (np.loadtxt happily parses 'nan')."""
    bad = np.flatnonzero(~((rows["rating"] >= scale[0]) & (rows["rating"] <= scale[1])))
    if len(bad):
        # Blank lines are skipped by loadtxt, so count lines again to name the right one.
        for n, (lineno, fields) in enumerate(_split_lines(path, None, None, skip_header=header)):
            if n == bad[0]:
                raise ValueError(f"{path}, line {lineno}: rating outside {scale}: {''.join(fields)!r}")
        raise ValueError(f"{path}: rating outside {scale}")


def _rows_from_file(full: RatingData, path: Path) -> RatingData:
    """The ratings of `path` expressed with the id maps of `full` (duplicates and order kept)."""
    rows = _read_ratings(path, "\t", full.rating_scale)
    user = _dense_index(np.array(full.user_ids, dtype=np.int64), rows["user"], path, "user")
    item = _dense_index(np.array(full.item_ids, dtype=np.int64), rows["item"], path, "item")
    return replace(full, name=f"{full.name}/{path.name}", user=user, item=item,
                   rating=np.ascontiguousarray(rows["rating"]), ts=np.ascontiguousarray(rows["ts"]))


def _dense_index(ids: np.ndarray, raw: np.ndarray, path: Path, what: str) -> np.ndarray:
    pos = np.minimum(np.searchsorted(ids, raw), max(len(ids) - 1, 0))
    unknown = np.flatnonzero(ids[pos] != raw) if len(ids) else np.arange(len(raw))
    if len(unknown):
        raise ValueError(f"{path}: {what} id {raw[unknown[0]]} (row {unknown[0] + 1}) is not in the dataset")
    return pos


# ----------------------------------------------------------------------------- side files


def _ml100k_users(path: Path) -> dict[int, dict]:
    users = {}
    for lineno, (uid, age, gender, occupation, zipcode) in _split_lines(path, "|", 5):
        users[_parse_field(uid, int, "user id", path, lineno)] = {
            "gender": gender,
            "age": _parse_field(age, int, "age", path, lineno),
            "occupation": occupation,
            "zip": zipcode,
        }
    return users


def _ml100k_genres(path: Path) -> list[str]:
    """u.genre lines are `name|index`; return the names in index order."""
    by_index = {}
    for lineno, (name, index) in _split_lines(path, "|", 2):
        by_index[_parse_field(index, int, "genre index", path, lineno)] = name
    return [by_index[i] for i in sorted(by_index)]


def _ml100k_items(root: Path) -> dict[int, dict]:
    genres = _ml100k_genres(root / "u.genre")
    path = root / "u.item"
    items = {}
    for lineno, fields in _split_lines(path, "|", 5 + len(genres)):
        item_id, title, release_date = fields[:3]
        flags = [_parse_field(flag, int, "genre flag", path, lineno) for flag in fields[5:]]
        items[_parse_field(item_id, int, "item id", path, lineno)] = {
            "title": title,
            "year": _year(release_date, title),
            "genres": [name for name, flag in zip(genres, flags, strict=True) if flag],
        }
    return items


def _ml1m_users(path: Path) -> dict[int, dict]:
    users = {}
    for lineno, (uid, gender, age, occupation, zipcode) in _split_lines(path, "::", 5):
        code = _parse_field(occupation, int, "occupation", path, lineno)
        if not 0 <= code < len(ML1M_OCCUPATIONS):
            raise ValueError(f"{path}, line {lineno}: unknown occupation code {code}")
        users[_parse_field(uid, int, "user id", path, lineno)] = {
            "gender": gender,
            "age": _parse_field(age, int, "age", path, lineno),  # bucket code = lower bound in years
            "occupation": ML1M_OCCUPATIONS[code],
            "zip": zipcode,
        }
    return users


def _dat_movies(path: Path) -> dict[int, dict]:
    """movies.dat of ML-1M/10M: `MovieID::Title::Genres`."""
    return {
        _parse_field(movie_id, int, "movie id", path, lineno): _movie(title, genres)
        for lineno, (movie_id, title, genres) in _split_lines(path, "::", 3)
    }


def _csv_movies(path: Path) -> dict[int, dict]:
    """movies.csv: `movieId,title,genres` with a header; titles may be quoted and contain commas."""
    movies = {}
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for fields in reader:
            if not fields:
                continue
            if len(fields) != 3:
                raise ValueError(f"{path}, line {reader.line_num}: expected 3 fields, got {len(fields)}")
            movie_id, title, genres = fields
            movies[_parse_field(movie_id, int, "movie id", path, reader.line_num)] = _movie(title, genres)
    return movies


def _movie(title: str, genres: str) -> dict:
    names = [] if genres in ("", NO_GENRES) else genres.split("|")
    return {"title": title, "year": _year("", title), "genres": names}


def _year(release_date: str, title: str) -> int | None:
    """Year from a release date like 01-Jan-1995, else from a trailing '(1995)' in the title."""
    release_date = release_date.strip()
    if len(release_date) >= 4 and release_date[-4:].isdigit():
        return int(release_date[-4:])
    match = _YEAR_IN_TITLE.search(title)
    return int(match.group(1)) if match else None


# ----------------------------------------------------------------------------- helpers


def _build(name: str, ratings: np.ndarray, users: dict[int, dict], items: dict[int, dict],
           scale: tuple[float, float]) -> RatingData:
    """Dense indices in ascending numeric id order over rated ids plus side-file ids."""
    user_ids, user = _dense_ids(ratings["user"], np.fromiter(users, dtype=np.int64, count=len(users)))
    item_ids, item = _dense_ids(ratings["item"], np.fromiter(items, dtype=np.int64, count=len(items)))
    return RatingData(
        name=name,
        user=user,
        item=item,
        rating=np.ascontiguousarray(ratings["rating"]),  # not views: let the row array be freed
        ts=np.ascontiguousarray(ratings["ts"]),
        user_ids=[str(i) for i in user_ids.tolist()],
        item_ids=[str(i) for i in item_ids.tolist()],
        users=[users.get(i, {}) for i in user_ids.tolist()],
        items=[items.get(i, {}) for i in item_ids.tolist()],
        rating_scale=scale,
    )


def _dense_ids(raw: np.ndarray, catalog: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids of raw and catalog, and the dense index of each raw id."""
    low = min(raw.min(initial=0), catalog.min(initial=0))
    high = max(raw.max(initial=0), catalog.max(initial=0))
    if low < 0 or high > _MAX_TABLE_ID:
        ids = np.union1d(raw, catalog)
        return ids, np.searchsorted(ids, raw)
    # MovieLens ids are small non-negative ints: a lookup table is O(n), several times faster
    # than sorting 25M ids.
    present = np.zeros(high + 1, dtype=bool)
    present[raw] = True
    present[catalog] = True
    ids = np.flatnonzero(present)
    lookup = np.zeros(high + 1, dtype=np.int64)
    lookup[ids] = np.arange(len(ids))
    return ids, lookup[raw]


def _split_lines(path: Path, sep: str | None, n_fields: int | None,
                 skip_header: bool = False) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank line; a wrong field count is a malformed line."""
    with open(path, encoding=ENCODING) as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if (skip_header and lineno == 1) or not line.strip():
                continue
            fields = line.split(sep) if sep else [line]
            if n_fields is not None and len(fields) != n_fields:
                raise ValueError(f"{path}, line {lineno}: expected {n_fields} fields separated by "
                                 f"{sep!r}, got {len(fields)}: {line!r}")
            yield lineno, fields


def _parse_field(value: str, parse: Callable, what: str, path: Path, lineno: int):
    try:
        return parse(value.strip())
    except ValueError:
        raise ValueError(f"{path}, line {lineno}: bad {what} {value!r}") from None
