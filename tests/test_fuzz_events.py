"""Property-based tests of every topic's parser: whatever the bytes, a checked event or an EventError whose
reason is a dead-letter reason (and whose dead letter can be published); never another exception.

Strategies and profiles: tests/fuzzing.py. Coverage-guided runs of the same parsers: bench/fuzz_parsers.py.
"""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import orjson
import pytest
from fuzzing import dumps, events, examples, json_values, mutated, payloads, weighted
from hypothesis import event, given
from hypothesis import strategies as st

from stream_app.data.features import FeatureSchema
from stream_app.errors import EventError
from stream_app.stream import events as ev
from stream_app.stream import internal
from stream_app.stream import state as st_
from stream_app.stream.codec import decode_row, encode_row

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

SCHEMA = FeatureSchema(genders=["F", "M"], occupations=["artist"], genres=["Comedy", "Drama"])
MAX = 65536  # the default max_event_bytes: deep nesting fits under it and must fail as JSON
N_DIM = 4


def outcome(parse, raw):
    """The parsed value, or None after checking the EventError is a proper dead letter."""
    try:
        value = parse(raw)
    except EventError as error:
        assert error.reason in ev.REASONS and error.reason != ev.PROCESSING_ERROR, error
        letter = ev.dead_letter("topic", 0, 7, raw, error).to_representation()
        assert letter["reason"] == error.reason and orjson.loads(orjson.dumps(letter)) == letter
        event(f"dead letter: {error.reason}")  # in --hypothesis-show-statistics: both outcomes are reached
        return None
    event("parsed")
    return value


def check_id(value: str) -> None:
    assert isinstance(value, str) and value.strip() and len(value) <= ev.MAX_ID_CHARS
    value.encode("utf-8")  # no lone surrogates


def check_storable(side: dict) -> None:
    """Side data of a parsed event can be stored in a row and read back unchanged."""
    row = st_.new_state()
    st_.update_side(row, "e", side, window=4)
    assert decode_row(encode_row(row)) == row


@examples(300)
@given(payloads("rating"))
def test_rating_parser(raw):
    event = outcome(lambda r: ev.parse_rating(r, SCHEMA, MAX), raw)
    if event is not None:
        for key in ("event_id", "user_id", "item_id"):
            check_id(getattr(event, key))
        assert math.isfinite(event.ts) and ev.MIN_TS <= event.ts < ev.MAX_TS
        stars, thumbs = event.rates
        assert stars is None or -1.0 <= stars <= 1.0
        assert thumbs in (None, 0.0, 1.0) and (stars, thumbs) != (None, None)
        assert event.context is None or isinstance(event.context, dict)


SIDE_DATA = {"user": (ev.parse_user, "user_id", SCHEMA.encode_user),  # parser, id field, encoder
             "item": (ev.parse_item, "item_id", SCHEMA.encode_item)}


@pytest.mark.parametrize("kind", ["user", "item"])
@examples(200)
@given(data=st.data())
def test_side_data_parsers(kind, data):
    parse, id_field, encode = SIDE_DATA[kind]
    event = outcome(lambda r: parse(r, MAX), data.draw(payloads(kind), label="raw"))
    if event is not None:
        check_id(event.event_id), check_id(getattr(event, id_field))
        check_storable(event.side)
        encode(event.side)


@examples(200)
@given(payloads("request"))
def test_recommend_request_parser(raw):
    request = outcome(lambda r: ev.parse_request(r, MAX, 10), raw)
    if request is not None:
        check_id(request.request_id), check_id(request.user_id)
        assert type(request.n) is int and 1 <= request.n <= ev.MAX_N


@examples(100)
@given(st.sampled_from(["rating", "user", "item", "request"]), events("rating") | events("user"))
def test_an_oversized_message_is_refused_for_its_size_first(kind, message):
    raw = dumps(message)
    limit = len(raw) - 1
    parse = {"rating": lambda r: ev.parse_rating(r, SCHEMA, limit), "user": lambda r: ev.parse_user(r, limit),
             "item": lambda r: ev.parse_item(r, limit), "request": lambda r: ev.parse_request(r, limit, 10)}[kind]
    with pytest.raises(EventError) as info:
        parse(raw)
    assert info.value.reason == ev.OVERSIZED


def test_valid_events_of_every_topic_parse():
    """The strategies reach the accepting side too (else the properties above would test refusals only)."""
    assert ev.parse_rating(dumps({"event_id": 1, "user_id": "u", "item_id": "i", "rating": {"thumbs": 1},
                                  "ts": "2020-09-13T12:26:40Z"}), SCHEMA, MAX).rates == [None, 1.0]
    assert ev.parse_user(dumps({"event_id": "e", "user_id": 7, "age": 2**53 - 1}), MAX).side == {"age": 2**53 - 1}
    assert ev.parse_item(dumps({"event_id": "e", "item_id": "i", "genres": []}), MAX).side == {"genres": []}
    assert ev.parse_request(dumps({"request_id": "q", "user_id": "u"}), MAX, 10).n == 10


# ---------------------------------------------------------------------------------------------- regressions

@pytest.mark.parametrize("raw", [
    b'{"event_id": "e", "user_id": "u", "gender": "\\ud800"}',  # a lone surrogate: no row encoder takes it
    b'{"event_id": "e", "user_id": "u", "zip": "a\\udfffb"}',
    b'{"event_id": "e", "user_id": "u", "age": 100000000000000000000}',  # beyond 64 bits: no row takes it
    b'{"event_id": "e", "user_id": "u", "age": -1e300}',
], ids=["surrogate-gender", "surrogate-zip", "age-1e20", "age--1e300"])
def test_user_side_data_a_row_cannot_hold_is_bad_type(raw):
    """Found by test_side_data_parsers (users): these parsed, and the batch then failed writing the row (orjson refuses
    them), so every event of the batch became a processing_error dead letter."""
    with pytest.raises(EventError) as info:
        ev.parse_user(raw, MAX)
    assert info.value.reason == ev.BAD_TYPE


@pytest.mark.parametrize("raw", [
    b'{"event_id": "e", "item_id": "i", "title": "\\ud83d"}',
    b'{"event_id": "e", "item_id": "i", "genres": ["Drama", "\\udc00"]}',
    b'{"event_id": "e", "item_id": "i", "year": 1e19}',
], ids=["surrogate-title", "surrogate-genre", "year-1e19"])
def test_item_side_data_a_row_cannot_hold_is_bad_type(raw):
    with pytest.raises(EventError) as info:
        ev.parse_item(raw, MAX)
    assert info.value.reason == ev.BAD_TYPE


# ---------------------------------------------------------------------------------------------- internal topics

def forward(**over) -> dict:
    d = {"event_id": "e1", "item_id": "i1", "user_id": "u1", "rates": [0.5, None], "ts": 1.7e9,
         "user_vector": st_.pack_vector(np.arange(N_DIM, dtype=np.float32)), "user_features": [[0, 1.0], [3, 0.5]]}
    return {**d, **over}


def overrides(fields: dict) -> st.SearchStrategy[dict]:
    """Usually nothing or one field replaced, sometimes several."""
    one = st.sampled_from(sorted(fields)).flatmap(lambda key: fields[key].map(lambda value: {key: value}))
    return weighted((2, st.just({})), (4, one), (1, st.fixed_dictionaries({}, optional=fields)))


FORWARD_FIELDS = {
    "rates": st.one_of(st.lists(st.one_of(st.none(), st.floats()), max_size=3), json_values),
    "user_vector": st.one_of(st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()), json_values),
    "user_features": st.one_of(st.lists(st.lists(st.one_of(st.integers(), st.floats()), max_size=3), max_size=3),
                               json_values),
    "event_id": json_values, "item_id": json_values, "user_id": json_values, "ts": json_values,
}
forwards = weighted((5, overrides(FORWARD_FIELDS).map(lambda over: dumps(forward(**over)))),
                    (2, mutated(st.just(dumps(forward())))), (1, json_values.map(dumps)), (1, st.binary(max_size=100)))


@examples(200)
@given(forwards)
def test_forwarded_rating_parser(raw):
    update = outcome(internal.parse_forwarded, raw)
    if update is not None:
        check_id(update.event_id), check_id(update.item_id), check_id(update.user_id)
        assert all(x is None or math.isfinite(x) for x in update.rates) and math.isfinite(update.ts)
        assert update.user_vector.dtype == np.float32 and np.all(np.isfinite(update.user_vector))
        assert all(type(k) is int and k >= 0 and math.isfinite(v) for k, v in update.user_features)


def entry(**over) -> dict:
    d = {"vector": st_.pack_vector(np.ones(N_DIM, np.float32)), "features": [[1, 1.0]], "n_ratings": 3,
         "model_version": "m@1"}
    return {**d, **over}


ENTRY_FIELDS = {"vector": st.one_of(st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()), json_values),
                "features": json_values, "n_ratings": json_values, "model_version": json_values}
catalogue_records = st.tuples(
    weighted((4, st.just(b"item-7")), (1, st.none()), (1, st.binary(max_size=12))),
    weighted((5, overrides(ENTRY_FIELDS).map(lambda over: dumps(entry(**over)))), (2, mutated(st.just(dumps(entry())))),
             (1, json_values.map(dumps)), (1, st.binary(max_size=100)), (1, st.none())))


@examples(200)
@given(catalogue_records)
def test_catalogue_entry_parser(record):
    parsed = outcome(lambda r: internal.parse_catalogue_entry(record[0], r, N_DIM), record[1])
    if parsed is not None:
        check_id(parsed.item_id)
        assert parsed.vector.shape == (N_DIM,) and np.all(np.isfinite(parsed.vector))
        assert parsed.n_ratings is None or (type(parsed.n_ratings) is int and parsed.n_ratings >= 0)
        assert parsed.model_version is None or isinstance(parsed.model_version, str)


def test_well_formed_internal_messages_parse():
    update = internal.parse_forwarded(json.dumps(forward()).encode())
    assert update.rates == (0.5, None) and update.user_features == ((0, 1.0), (3, 0.5))
    parsed = internal.parse_catalogue_entry(b"item-7", json.dumps(entry()).encode(), N_DIM)
    assert parsed.item_id == "item-7" and parsed.n_ratings == 3 and np.array_equal(parsed.vector, np.ones(N_DIM))


@pytest.mark.parametrize("over, reason", [
    ({"user_vector": "abc"}, ev.BAD_TYPE),  # not base64 of whole float32 values
    ({"user_features": [[1.5, 1.0]]}, ev.BAD_TYPE),
    ({"rates": [0.5]}, ev.BAD_TYPE),
    ({"ts": None}, ev.MISSING_FIELD),
    ({"item_id": ""}, ev.BAD_ID),
], ids=["vector", "features", "rates", "ts", "item-id"])
def test_malformed_forwards_are_dead_letters_with_a_reason(over, reason):
    """Before internal.parse_forwarded these raised KeyError, TypeError or binascii.Error (processing_error)."""
    with pytest.raises(EventError) as info:
        internal.parse_forwarded(json.dumps(forward(**over)).encode())
    assert info.value.reason == reason


def test_a_catalogue_vector_of_another_width_is_refused():
    """A 1-wide vector used to broadcast over a whole catalogue row."""
    with pytest.raises(EventError, match="wide"):
        internal.parse_catalogue_entry(b"i", json.dumps(entry(vector=st_.pack_vector([1.0]))).encode(), N_DIM)
