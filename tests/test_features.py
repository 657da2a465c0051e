"""FeatureSchema: dims, one-hots, unknown values, JSON round trip, rates, event validation."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from stream_app.data.features import (
    FeatureSchema,
    encode_context,
    item_side_from_event,
    user_side_from_event,
)
from stream_app.data.movielens import load_csv_dataset, load_ml1m, load_ml100k
from stream_app.errors import EventError

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def ml100k():
    return load_ml100k(FIXTURES / "ml-100k")


@pytest.fixture(scope="module")
def schema(ml100k):
    return FeatureSchema.fit(ml100k)


def block(vec, start, size):
    return vec[start:start + size].tolist()


# ----------------------------------------------------------------------------- fitting, dims, JSON


def test_fit_vocabularies_and_dims(schema):
    assert schema.genders == ["F", "M"]
    assert schema.occupations == ["other", "student", "technician", "writer"]
    assert schema.genres == ["Action", "Animation", "Children's", "Comedy", "Drama", "Mystery", "Thriller",
                             "unknown"]
    assert schema.year_range == (1994, 1996)
    assert schema.rating_scale == (1.0, 5.0) and schema.thumbs_threshold == 4.0
    assert schema.user_dim == 2 + 7 + 4 == len(schema.user_feature_names)
    assert schema.item_dim == 2 + 8 == len(schema.item_feature_names)
    assert (schema.context_dim, schema.rates_dim, schema.rate_names) == (9, 2, ["stars", "thumbs"])


def test_json_round_trip(schema):
    d = json.loads(json.dumps(schema.to_dict()))
    again = FeatureSchema.from_dict(d)
    assert again == schema
    assert again.to_dict() == d
    side = {"gender": "F", "age": 30}
    assert np.array_equal(again.encode_user(side), schema.encode_user(side))


def test_from_dict_rejects_unknown_keys_and_versions(schema):
    with pytest.raises(ValueError, match="unknown feature schema keys"):
        FeatureSchema.from_dict({**schema.to_dict(), "colour": []})
    with pytest.raises(ValueError, match="version 99"):
        FeatureSchema.from_dict({**schema.to_dict(), "version": 99})


def test_fit_without_side_data_still_works():
    data = load_csv_dataset(FIXTURES / "ml-latest-small")
    schema = FeatureSchema.fit(data)
    assert schema.genders == [] and schema.occupations == []
    assert schema.user_dim == 7
    assert schema.user_matrix(data).shape == (3, 7) and not schema.user_matrix(data).any()


# ----------------------------------------------------------------------------- users and items


def test_encode_user_one_hots(schema):
    vec = schema.encode_user({"gender": "M", "age": 24, "occupation": "writer", "zip": "00000"})
    assert vec.dtype == np.float32 and vec.shape == (schema.user_dim,)
    assert block(vec, 0, 2) == [0, 1]
    assert block(vec, 2, 7) == [0, 1, 0, 0, 0, 0, 0]  # 18-24
    assert block(vec, 9, 4) == [0, 0, 0, 1]


@pytest.mark.parametrize(("age", "bucket"), [
    (1, 0), (17, 0), (18, 1), (24, 1), (25, 2), (35, 3), (45, 4), (49, 4), (50, 5), (55, 5), (56, 6), (73, 6),
])
def test_age_buckets_hold_ml1m_codes_and_years(schema, age, bucket):
    assert block(schema.encode_user({"age": age}), 2, 7) == [float(i == bucket) for i in range(7)]


def test_missing_or_unknown_user_values_give_zero_blocks(schema):
    assert not schema.encode_user({}).any()
    vec = schema.encode_user({"gender": "X", "age": None, "occupation": "astronaut"})
    assert not vec.any()
    vec = schema.encode_user({"gender": "F", "occupation": "astronaut"})
    assert vec.sum() == 1 and vec[0] == 1


def test_encode_item(schema):
    vec = schema.encode_item({"year": 1995, "genres": ["Drama", "Thriller", "Space Opera"]})
    assert vec.shape == (schema.item_dim,)
    assert block(vec, 0, 2) == [0.0, 0.0]  # middle of 1994..1996, year present
    assert [schema.genres[i] for i in np.flatnonzero(vec[2:])] == ["Drama", "Thriller"]
    assert schema.encode_item({"year": 1994})[0] == -1 and schema.encode_item({"year": 1996})[0] == 1
    # clipped outside the fitted range
    assert schema.encode_item({"year": 1900})[0] == -1 and schema.encode_item({"year": 2030})[0] == 1
    assert block(schema.encode_item({"year": None}), 0, 2) == [0, 1]  # year missing flag
    assert not schema.encode_item({"genres": ["Space Opera"], "year": 1995}).any()


def test_matrices_cover_all_entities(ml100k, schema):
    users, items = schema.user_matrix(ml100k), schema.item_matrix(ml100k)
    assert users.shape == (4, schema.user_dim) and items.shape == (5, schema.item_dim)
    assert users.dtype == np.float32 and items.dtype == np.float32
    assert np.array_equal(items[4], schema.encode_item(ml100k.items[4]))
    assert users.sum(axis=1).tolist() == [3, 3, 3, 3]  # gender, age, occupation for everyone


def test_ml1m_codes_encode():
    data = load_ml1m(FIXTURES / "ml-1m")
    schema = FeatureSchema.fit(data)
    users = schema.user_matrix(data)
    ages = users[:, len(schema.genders):len(schema.genders) + 7].argmax(axis=1)
    assert ages.tolist() == [0, 6, 2, 4]  # codes 1, 56, 25, 45


# ----------------------------------------------------------------------------- context and rates


def test_encode_context_weekday_and_hour():
    monday_6am = 1704088800  # 2024-01-01 06:00 UTC, a Monday
    ctx = encode_context([0, monday_6am])
    assert ctx.shape == (2, 9) and ctx.dtype == np.float32
    assert ctx[0, :7].tolist() == [0, 0, 0, 1, 0, 0, 0]  # 1970-01-01 was a Thursday
    assert ctx[0, 7:].tolist() == pytest.approx([0.0, 1.0])  # midnight
    assert ctx[1, :7].argmax() == 0
    assert ctx[1, 7:].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)  # 6 am: quarter turn
    assert encode_context(monday_6am).shape == (1, 9)


def test_encode_rates_and_thumbs(schema):
    rates = schema.encode_rates([1, 2, 3, 4, 5])
    assert rates.shape == (5, 2) and rates.dtype == np.float32
    assert rates[:, 0].tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert rates[:, 1].tolist() == [0, 0, 0, 1, 1]  # 4-5 up, 1-3 down
    assert schema.decode_stars(rates[:, 0]).tolist() == [1, 2, 3, 4, 5]
    assert np.isnan(schema.encode_rates(math.nan)).all()


def test_half_star_scale_thumbs():
    schema = FeatureSchema.fit(load_csv_dataset(FIXTURES / "ml-latest-small"))
    assert schema.rating_scale == (0.5, 5.0)
    rates = schema.encode_rates([0.5, 3.5, 4.0, 5.0])
    assert rates[:, 0].tolist() == pytest.approx([-1.0, 1 / 3, 5 / 9, 1.0])
    assert rates[:, 1].tolist() == [0, 0, 1, 1]


# ----------------------------------------------------------------------------- event validation


def test_rates_from_event_accepts_numbers_and_dicts(schema):
    assert schema.rates_from_event(4).tolist() == [0.5, 1.0]
    assert schema.rates_from_event(np.float32(2.0)).tolist() == [-0.5, 0.0]
    assert schema.rates_from_event({"stars": 4}).tolist() == [0.5, 1.0]
    assert schema.rates_from_event({"stars": 5, "thumbs": 0}).tolist() == [1.0, 0.0]
    thumbs_only = schema.rates_from_event({"thumbs": 1})
    assert math.isnan(thumbs_only[0]) and thumbs_only[1] == 1.0


@pytest.mark.parametrize(("value", "reason"), [
    (True, "bad_type"), ("4", "bad_type"), (None, "bad_type"), (math.nan, "bad_type"), (math.inf, "bad_type"),
    ([4], "bad_type"), ({"stars": "4"}, "bad_type"), ({"stars": False}, "bad_type"), ({}, "bad_type"),
    ({"thumbs": True}, "bad_type"),
    (6, "rating_out_of_range"), (0, "rating_out_of_range"), (-1.5, "rating_out_of_range"),
    ({"stars": 5.5}, "rating_out_of_range"), ({"thumbs": 2}, "rating_out_of_range"),
    ({"likes": 1}, "unknown_rate"), ({"stars": 4, "hearts": 1}, "unknown_rate"),
])
def test_rates_from_event_rejects(schema, value, reason):
    with pytest.raises(EventError) as err:
        schema.rates_from_event(value)
    assert err.value.reason == reason


def test_side_from_event_picks_and_cleans():
    event = {"user": "42", "gender": "F", "age": 31.0, "occupation": "writer", "zip": "12345", "extra": 1}
    assert user_side_from_event(event) == {"gender": "F", "age": 31, "occupation": "writer", "zip": "12345"}
    assert user_side_from_event({"age": None}) == {}
    item = {"item": "7", "title": "X (1999)", "year": 1999, "genres": ["Drama"], "rating": 3}
    assert item_side_from_event(item) == {"title": "X (1999)", "year": 1999, "genres": ["Drama"]}


@pytest.mark.parametrize(("picker", "event"), [
    (user_side_from_event, {"age": "31"}),
    (user_side_from_event, {"age": True}),
    (user_side_from_event, {"age": 31.5}),
    (user_side_from_event, {"gender": 1}),
    (user_side_from_event, {"occupation": ["writer"]}),
    (user_side_from_event, ["gender", "F"]),
    (item_side_from_event, {"genres": "Drama"}),
    (item_side_from_event, {"genres": ["Drama", 3]}),
    (item_side_from_event, {"year": "1999"}),
    (item_side_from_event, {"year": math.inf}),
])
def test_side_from_event_rejects_wrong_types(picker, event):
    with pytest.raises(EventError) as err:
        picker(event)
    assert err.value.reason == "bad_type"
