"""Parsing and validation of raw stream events, and plain-JSON outputs (no Kafka)."""

from __future__ import annotations

import json

import pytest

from stream_app.data.features import FeatureSchema
from stream_app.errors import EventError
from stream_app.stream import events as ev

SCHEMA = FeatureSchema(genders=["F", "M"], occupations=["artist", "student"], genres=["Comedy", "Drama"])
MAX = 2000


def rating(**over) -> bytes:
    d = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "rating": 4, "ts": 1_600_000_000}
    d.update(over)
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def reason_of(fn, *args) -> str:
    with pytest.raises(EventError) as info:
        fn(*args)
    return info.value.reason


def test_valid_rating_is_normalised():
    e = ev.parse_rating(rating(user_id=42, item_id="über-film", ts="2020-09-13T12:26:40"), SCHEMA, MAX)
    assert (e.event_id, e.user_id, e.item_id) == ("e1", "42", "über-film")
    assert e.ts == 1_600_000_000  # naive ISO 8601 is UTC
    assert e.rates == [0.5, 1.0] and e.rating == 4 and e.context is None


def test_multi_rate_rating_and_context_are_kept():
    e = ev.parse_rating(rating(rating={"stars": 2, "thumbs": 1}, context={"device": "tv"}), SCHEMA, MAX)
    assert e.rates == [-0.5, 1.0] and e.context == {"device": "tv"}
    e = ev.parse_rating(rating(rating={"thumbs": 0}), SCHEMA, MAX)
    assert e.rates == [None, 0.0]


def test_timestamps():
    assert ev.parse_ts("2020-01-01T00:00:00Z") == 1_577_836_800
    assert ev.parse_ts("2020-01-01T01:00:00+01:00") == 1_577_836_800
    assert ev.parse_ts(1_577_836_800.5) == 1_577_836_800.5
    for bad in ("yesterday", "1600000000", True, 1.6e12, float("inf"), [1], "9999-12-31T23:59:59-23:59"):
        assert reason_of(ev.parse_ts, bad) == ev.BAD_TIMESTAMP, bad


@pytest.mark.parametrize("raw, reason", [
    (b"x" * (MAX + 1), ev.OVERSIZED),
    (b"{not json", ev.UNPARSEABLE_JSON),
    (b"\xff\xfe{}", ev.UNPARSEABLE_JSON),
    (b"[" * 1500, ev.UNPARSEABLE_JSON),
    (b'{"rating": NaN}', ev.UNPARSEABLE_JSON),
    (b"", ev.UNPARSEABLE_JSON),
    (None, ev.NOT_AN_OBJECT),
    (b"[1, 2]", ev.NOT_AN_OBJECT),
    (b'"text"', ev.NOT_AN_OBJECT),
    (b"null", ev.NOT_AN_OBJECT),
    (rating(event_id=...), ev.MISSING_FIELD),
    (rating(user_id=None), ev.MISSING_FIELD),
    (rating(item_id=...), ev.MISSING_FIELD),
    (rating(rating=...), ev.MISSING_FIELD),
    (rating(ts=...), ev.MISSING_FIELD),
    (rating(rating="4"), ev.BAD_TYPE),
    (rating(rating=True), ev.BAD_TYPE),
    (rating(rating=[4]), ev.BAD_TYPE),
    (rating(rating={}), ev.BAD_TYPE),
    (rating(rating={"stars": "4"}), ev.BAD_TYPE),
    (rating(context=[1]), ev.BAD_TYPE),
    (rating(context="tv"), ev.BAD_TYPE),
    (rating(user_id=True), ev.BAD_ID),
    (rating(user_id=1.5), ev.BAD_ID),
    (rating(item_id=""), ev.BAD_ID),
    (rating(item_id="   "), ev.BAD_ID),
    (rating(item_id="x" * 257), ev.BAD_ID),
    (rating(item_id="a\nb"), ev.BAD_ID),
    (rating(item_id="a\u0000b"), ev.BAD_ID),
    (rating(item_id="\ud800"), ev.BAD_ID),
    (rating(item_id={"id": 1}), ev.BAD_ID),
    (rating(event_id=[1]), ev.BAD_ID),
    (rating(ts="soon"), ev.BAD_TIMESTAMP),
    (rating(ts=1_600_000_000_000), ev.BAD_TIMESTAMP),
    (rating(rating=6), ev.RATING_OUT_OF_RANGE),
    (rating(rating=0.5), ev.RATING_OUT_OF_RANGE),
    (rating(rating={"thumbs": 2}), ev.RATING_OUT_OF_RANGE),
    (rating(rating={"stars": 4, "likes": 1}), ev.UNKNOWN_RATE),
])
def test_bad_ratings_have_a_reason(raw, reason):
    assert reason_of(ev.parse_rating, raw, SCHEMA, MAX) == reason
    assert reason in ev.REASONS


def test_deeply_nested_json_is_unparseable_not_a_crash():
    raw = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    assert reason_of(ev.parse_rating, raw, SCHEMA, 10_000_000) == ev.UNPARSEABLE_JSON


def test_ids_accept_strings_integers_and_unicode():
    for value, text in [(7, "7"), (-3, "-3"), (12.0, "12"), ("ユーザー👩‍💻", "ユーザー👩‍💻"), ("x" * 256, "x" * 256)]:
        assert ev.parse_id({"user_id": value}, "user_id") == text


@pytest.mark.parametrize("value", ["us\u200ber", "\ufeffitem", "item\u202e", "a\u2028b", "us\u200der",
                                   "\u200d", "\u2060x", "x\u00ad"])
def test_ids_with_invisible_characters_are_refused(value):
    assert reason_of(ev.parse_id, {"user_id": value}, "user_id") == ev.BAD_ID


def test_negative_and_huge_integer_ids():
    assert ev.parse_id({"user_id": -5}, "user_id") == "-5"  # ids are opaque: negative ones are valid
    assert ev.parse_id({"user_id": 2**64}, "user_id") == str(2**64)
    assert reason_of(ev.parse_id, {"user_id": 10**300}, "user_id") == ev.BAD_ID  # longer than 256 characters
    raw = b'{"event_id": "e", "user_id": ' + b"9" * 5000 + b', "item_id": "i", "rating": 4, "ts": 1}'
    assert reason_of(ev.parse_rating, raw, SCHEMA, 100_000) == ev.BAD_ID  # read as inf, not an OverflowError


BIG = "9" * 400


@pytest.mark.parametrize("parse, raw, reason", [
    ("request", f'{{"request_id": "q", "user_id": "u", "n": {BIG}}}', ev.BAD_TYPE),
    ("rating", f'{{"event_id": "e", "user_id": "u", "item_id": "i", "rating": 4, "ts": -{BIG}}}', ev.BAD_TIMESTAMP),
    ("rating", f'{{"event_id": "e", "user_id": "u", "item_id": "i", "rating": {BIG}, "ts": 1}}', ev.BAD_TYPE),
    ("rating", f'{{"event_id": "e", "user_id": "u", "item_id": "i", "rating": {{"thumbs": {BIG}}}, "ts": 1}}',
     ev.BAD_TYPE),
    ("user", f'{{"event_id": "e", "user_id": "u", "age": {BIG}}}', ev.BAD_TYPE),
    ("item", f'{{"event_id": "e", "item_id": "i", "year": -{BIG}}}', ev.BAD_TYPE),
])
def test_integers_beyond_the_float_range_are_refused_with_the_fields_reason(parse, raw, reason):
    raw = raw.encode()
    args = {"request": (ev.parse_request, raw, MAX, 10), "rating": (ev.parse_rating, raw, SCHEMA, MAX),
            "user": (ev.parse_user, raw, MAX), "item": (ev.parse_item, raw, MAX)}[parse]
    assert reason_of(*args) == reason


def test_user_item_and_request_events():
    u = ev.parse_user(b'{"event_id": 1, "user_id": 5, "gender": "F", "age": 30, "extra": [1]}', MAX)
    assert (u.event_id, u.user_id, u.side) == ("1", "5", {"gender": "F", "age": 30})
    i = ev.parse_item(b'{"event_id": "a", "item_id": "m1", "genres": ["Drama"], "year": 1999}', MAX)
    assert i.side == {"genres": ["Drama"], "year": 1999}
    assert reason_of(ev.parse_item, b'{"event_id": "a", "item_id": "m1", "genres": "Drama"}', MAX) == ev.BAD_TYPE
    assert reason_of(ev.parse_user, b'{"event_id": "a", "age": 3}', MAX) == ev.MISSING_FIELD
    r = ev.parse_request(b'{"request_id": "q", "user_id": 5}', MAX, 10)
    assert (r.request_id, r.user_id, r.n) == ("q", "5", 10)
    assert ev.parse_request(b'{"request_id": "q", "user_id": 5, "n": 3}', MAX, 10).n == 3
    for n in (0, 1001, 2.5, "3", True):
        raw = json.dumps({"request_id": "q", "user_id": 5, "n": n}).encode()
        assert reason_of(ev.parse_request, raw, MAX, 10) == ev.BAD_TYPE


def test_outputs_are_plain_json_without_faust_metadata():
    recs = ev.recommendations("u1", [("i1", 4.5), ("i2", float("-inf"))], "m@1")
    d = json.loads(recs.dumps())
    assert set(d) == {"user_id", "items", "model_version", "ts"}
    assert d["items"] == [{"item_id": "i1", "score": 4.5}, {"item_id": "i2", "score": 0.0}]
    d = json.loads(ev.recommendations("u1", [], "m@1", request_id="q7").dumps())
    assert d["request_id"] == "q7"
    v = json.loads(ev.vector_update("item", "i9", [0.5, float("nan")], 3, "m@1").dumps())
    assert set(v) == {"item_id", "vector", "n_ratings", "model_version", "ts"} and v["vector"] == [0.5, 0.0]
    u = json.loads(ev.vector_update("user", "u9", [0.5], 1, "m@1").dumps())
    assert set(u) == {"user_id", "vector", "n_ratings", "model_version", "ts"}
    dl = json.loads(ev.dead_letter("ratings", 2, 17, b"\xffabc", EventError("unparseable_json", "x")).dumps())
    assert set(dl) >= {"source_topic", "partition", "offset", "raw", "reason", "ts"}
    assert (dl["source_topic"], dl["partition"], dl["offset"], dl["reason"]) == ("ratings", 2, 17, "unparseable_json")
    assert dl["raw"] == "\ufffdabc"
    for record in (recs, ev.dead_letter("t", 0, 0, None, EventError("x"))):
        assert "__faust" not in record.dumps().decode()


def test_raw_text_is_truncated_with_a_marker():
    text = ev.raw_text(b"a" * 10_000, limit=100)
    assert text.startswith("a" * 100) and "truncated: 10000 bytes" in text and len(text) < 150
    assert ev.raw_text(b"short") == "short" and ev.raw_text(None) is None


def test_recommendations_carry_their_rank_score_rounded():
    recs = ev.recommendations("u1", [("i1", 4.296545505523682), ("i2", 4.9)], "m@1",
                              rank_scores=[9.123456789, 5.2])
    d = json.loads(recs.dumps())
    # ranked by rank_score (stars + popularity), so score (the predicted stars) may be out of order
    assert d["items"] == [{"item_id": "i1", "score": 4.2965, "rank_score": 9.1235},
                          {"item_id": "i2", "score": 4.9, "rank_score": 5.2}]
