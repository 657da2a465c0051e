"""MovieLens loaders on tiny hand-written fixtures (never the real GroupLens files)."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from stream_app.data.movielens import (
    ML100K_SPLITS,
    load_csv_dataset,
    load_ml1m,
    load_ml10m,
    load_ml100k,
    load_ml100k_split,
)

FIXTURES = Path(__file__).parent / "fixtures"


def raw_rows(data):
    """(user id, item id, stars, ts) in the original id space, in row order."""
    return [(data.user_ids[u], data.item_ids[i], float(r), int(t))
            for u, i, r, t in zip(data.user, data.item, data.rating, data.ts, strict=True)]


def file_rows(path, sep="\t", header=False):
    lines = path.read_text(encoding="latin-1").splitlines()[int(header):]
    return [(u, i, float(r), int(t)) for u, i, r, t in (line.split(sep) for line in lines if line.strip())]


# ----------------------------------------------------------------------------- ml-100k


def test_ml100k_counts_and_id_maps():
    data = load_ml100k(FIXTURES / "ml-100k")
    assert data.name == "ml-100k"
    assert (data.n_users, data.n_items, len(data)) == (4, 5, 11)
    assert data.user_ids == ["1", "2", "3", "5"]
    assert data.item_ids == ["1", "2", "4", "10", "267"]  # numeric order; 10 is in the catalog but unrated
    assert data.rating_scale == (1.0, 5.0)
    assert raw_rows(data) == file_rows(FIXTURES / "ml-100k" / "u.data")
    assert data.user.dtype == np.int64 and data.rating.dtype == np.float32


def test_ml100k_side_data():
    data = load_ml100k(FIXTURES / "ml-100k")
    assert data.users[0] == {"gender": "M", "age": 24, "occupation": "technician", "zip": "10001"}
    assert data.users[2]["zip"] == "T8H1N"
    toy, cafe, mystery, never, unknown = data.items
    assert toy == {"title": "Tin Robot Tales (1995)", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}
    assert cafe["title"] == "Café Society (1995)"  # latin-1
    assert mystery["year"] == 1994  # no release date: year from the title
    assert never["year"] == 1996 and never["genres"] == ["Action"]
    assert unknown == {"title": "unknown", "year": None, "genres": ["unknown"]}


def test_ml100k_split_matches_files_exactly():
    full = load_ml100k(FIXTURES / "ml-100k")
    split = load_ml100k_split(FIXTURES / "ml-100k", "u1")
    assert split.name == "u1"
    assert raw_rows(split.train) == file_rows(FIXTURES / "ml-100k" / "u1.base")
    assert raw_rows(split.test) == file_rows(FIXTURES / "ml-100k" / "u1.test")
    # user 5 rated item 1 twice in the files: both rows are kept
    assert sum(row[:2] == ("5", "1") for row in raw_rows(split.train)) == 2
    for part in (split.train, split.test):
        assert part.user_ids == full.user_ids and part.item_ids == full.item_ids
        assert part.users == full.users and part.items == full.items


def test_ml100k_split_reuses_given_full_data():
    full = load_ml100k(FIXTURES / "ml-100k")
    split = load_ml100k_split(FIXTURES / "ml-100k", "u1", full=full)
    assert split.train.users is full.users


def test_ml100k_unknown_split_lists_valid_ones():
    with pytest.raises(ValueError, match="u1, u2, u3, u4, u5, ua, ub"):
        load_ml100k_split(FIXTURES / "ml-100k", "u7")
    assert ML100K_SPLITS == ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


def test_ml100k_split_with_unknown_id_is_an_error(tmp_path):
    root = copy_fixture("ml-100k", tmp_path)
    with open(root / "u1.test", "a") as f:
        f.write("99\t1\t3\t875071900\n")
    with pytest.raises(ValueError, match="u1.test: user id 99"):
        load_ml100k_split(root, "u1")


# ----------------------------------------------------------------------------- ml-1m, ml-10m, csv


def test_ml1m():
    data = load_ml1m(FIXTURES / "ml-1m")
    assert (data.n_users, data.n_items, len(data)) == (4, 4, 7)
    assert data.item_ids == ["1", "2", "3", "5"]
    assert raw_rows(data) == file_rows(FIXTURES / "ml-1m" / "ratings.dat", "::")
    assert data.users[0] == {"gender": "F", "age": 1, "occupation": "K-12 student", "zip": "11111"}
    assert [u["occupation"] for u in data.users] == [
        "K-12 student", "self-employed", "scientist", "executive/managerial"]
    assert [u["age"] for u in data.users] == [1, 56, 25, 45]
    assert data.items[2] == {"title": "Crème Fraîche (1999)", "year": 1999, "genres": ["Comedy"]}
    assert data.items[1]["genres"] == ["Adventure", "Children's", "Fantasy"]


def test_ml10m_half_stars_and_no_users():
    data = load_ml10m(FIXTURES / "ml-10m")
    assert data.name == "ml-10m" and data.rating_scale == (0.5, 5.0)
    assert (data.n_users, data.n_items, len(data)) == (2, 3, 4)
    assert sorted(data.rating.tolist()) == [0.5, 3.5, 4.5, 5.0]
    assert data.users == [{}, {}]
    assert data.items[2] == {"title": "Back & Forth Again (1999)", "year": 1999, "genres": []}


def test_csv_dataset():
    data = load_csv_dataset(FIXTURES / "ml-latest-small")
    assert data.name == "ml-latest-small" and data.rating_scale == (0.5, 5.0)
    assert data.user_ids == ["1", "3", "10"]  # numeric, not string, order
    assert data.item_ids == ["1", "11", "4973", "176601"]
    assert raw_rows(data) == file_rows(FIXTURES / "ml-latest-small" / "ratings.csv", ",", header=True)
    assert data.items[1] == {"title": "Senator Next Door, The (1995)", "year": 1995,
                             "genres": ["Comedy", "Drama", "Romance"]}
    assert data.items[2]["title"].startswith("Émilie (Merveilleux monde d'Émilie, Le)")
    assert data.items[3] == {"title": "Grey Looking Glass", "year": None, "genres": []}
    assert load_csv_dataset(FIXTURES / "ml-latest-small", name="ml-25m").name == "ml-25m"


# ----------------------------------------------------------------------------- malformed files


def copy_fixture(name, tmp_path):
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def replace_line(path, lineno, text, encoding="latin-1"):
    lines = path.read_text(encoding=encoding).splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


@pytest.mark.parametrize(
    ("dataset", "filename", "lineno", "bad_line", "loader"),
    [
        ("ml-100k", "u.data", 3, "2\t1\tfour\t888550800", load_ml100k),
        ("ml-100k", "u.data", 2, "1\t2\t3", load_ml100k),
        ("ml-100k", "u.data", 4, "3\t4\t9\t889237455", load_ml100k),  # outside 1..5
        ("ml-100k", "u.user", 2, "2|53|F|other", load_ml100k),
        ("ml-100k", "u.user", 3, "3|old|M|student|T8H1N", load_ml100k),
        ("ml-100k", "u.item", 1, "1|Tin Robot Tales (1995)|01-Jan-1995||url|" + "|".join("x" * 19), load_ml100k),
        ("ml-1m", "ratings.dat", 5, "3::3", load_ml1m),
        ("ml-1m", "users.dat", 2, "2::M::56::99::22222", load_ml1m),
        ("ml-1m", "movies.dat", 3, "3::Crème Fraîche (1999)", load_ml1m),
        ("ml-10m", "ratings.dat", 2, "1::8::nan::838983525", load_ml10m),
        ("ml-latest-small", "ratings.csv", 4, "3,4973,0.5,yesterday", load_csv_dataset),
        ("ml-latest-small", "movies.csv", 2, "x1,Tin Robot Tales (1995),Comedy", load_csv_dataset),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, dataset, filename, lineno, bad_line, loader):
    root = copy_fixture(dataset, tmp_path)
    encoding = "utf-8" if filename == "movies.csv" else "latin-1"
    replace_line(root / filename, lineno, bad_line, encoding)
    with pytest.raises(ValueError, match=rf"{filename}, line {lineno}\b"):
        loader(root)


def test_blank_lines_are_skipped(tmp_path):
    root = copy_fixture("ml-1m", tmp_path)
    with open(root / "ratings.dat", "a") as f:
        f.write("\n\n")
    assert len(load_ml1m(root)) == 7
