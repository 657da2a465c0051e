"""Property-based tests of the table-row codec (stream/codec.py): rows round-trip exactly, and whatever bytes a
store holds, decode_row returns a row that encode_row writes back, or raises RowDecodeError; nothing else.

Strategies and profiles: tests/fuzzing.py. Coverage-guided runs: bench/fuzz_parsers.py --target row.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from fuzzing import examples, json_values, mutated, weighted
from hypothesis import event, given
from hypothesis import strategies as st
from test_stream_state import legacy_json

from stream_app.stream import codec
from stream_app.stream import state as st_

pytestmark = pytest.mark.timeout(300)  # a hang fails the test instead of stalling the suite

ids = st.text(st.characters(codec="utf-8"), min_size=1, max_size=10)
finite = st.floats(allow_nan=False, allow_infinity=False)
rates = st.one_of(st.none(), st.floats(-1, 1))
side = st.dictionaries(st.sampled_from(["gender", "age", "occupation", "zip", "title", "year", "genres"]),
                       st.one_of(ids, st.integers(-(2**53), 2**53), st.lists(ids, max_size=3)), max_size=4)
sparse = st.lists(st.tuples(st.integers(0, 10**6), finite), max_size=4).map(tuple)


@st.composite
def rows(draw) -> st_.EntityState:
    """Rows as the worker writes them: user rows (no rater columns) and item rows (rater vectors, features)."""
    dim = draw(st.integers(0, 6))
    raters = draw(st.booleans())
    vector = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=dim, max_size=dim).map(
        lambda v: np.array(v, np.float32))
    entries = st.builds(st_.WindowEntry, ids, rates, rates, finite, vector if raters else st.none(),
                        sparse if raters else st.none())
    return st_.EntityState(window=draw(st.lists(entries, max_size=5)), side=draw(side),
                           vector=draw(st.one_of(st.none(), vector)), n_ratings=draw(st.integers(0, 2**63 - 1)),
                           seen=draw(st.lists(st.binary(min_size=6, max_size=6).map(bytes.hex), max_size=5)),
                           model_version=draw(st.one_of(st.none(), ids)))


@examples(200)
@given(rows())
def test_rows_round_trip_through_both_encodings(row):
    raw = codec.encode_row(row)
    back = codec.decode_row(raw)
    assert back == row and codec.encode_row(back) == raw
    assert codec.decode_row(legacy_json(row)) == row  # rows of the JSON encoding before it read the same


def header_of(raw: bytes) -> dict:
    size = struct.unpack_from("<I", raw, 4)[0]
    return json.loads(raw[8:8 + size])


def with_header(raw: bytes, header) -> bytes:
    """The row with its JSON header replaced (the body left as it was)."""
    size = struct.unpack_from("<I", raw, 4)[0]
    head = json.dumps(header).encode()
    return raw[:4] + struct.pack("<I", len(head)) + head + raw[8 + size:]


@st.composite
def header_edits(draw) -> bytes:
    raw = codec.encode_row(draw(rows()))
    header = header_of(raw)
    key = draw(st.sampled_from([*header, "extra"]))
    header[key] = draw(weighted((3, json_values), (1, st.integers(-2, 10**6)), (1, st.booleans())))
    return with_header(raw, draw(weighted((6, st.just(header)), (1, json_values))))


@st.composite
def flipped(draw) -> bytes:
    """A stored row with a few bits flipped in place (same length: corrupt floats, digests, header text)."""
    raw = bytearray(codec.encode_row(draw(rows())))
    body = 8 + struct.unpack_from("<I", raw, 4)[0]  # digests, times, rates, vectors: any bits decode
    where = st.integers(body, len(raw) - 1) if body < len(raw) else st.integers(0, len(raw) - 1)
    for at in draw(st.lists(weighted((2, where), (1, st.integers(0, len(raw) - 1))), min_size=1, max_size=4)):
        raw[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(raw)


stored = weighted(
    (4, flipped()),
    (2, rows().map(codec.encode_row).flatmap(lambda raw: mutated(st.just(raw)))),
    (2, header_edits()),
    (1, rows().map(codec.encode_row).flatmap(lambda raw: st.integers(0, len(raw)).map(lambda n: raw[:n]))),
    (1, st.binary(max_size=64).map(lambda tail: codec.MAGIC + bytes([codec.VERSION]) + tail)),
    (1, st.binary(max_size=64)),
    (1, rows().map(legacy_json).flatmap(lambda raw: mutated(st.just(raw)))),
    (1, json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())),
    (1, st.builds(lambda **d: json.dumps(d, allow_nan=True).encode(), window=json_values, side=json_values,
                  vector=json_values, n_ratings=json_values, seen=json_values, model_version=json_values)),
)


@examples(300)
@given(stored)
def test_any_stored_bytes_decode_to_a_writable_row_or_a_row_decode_error(raw):
    try:
        row = codec.decode_row(raw)
    except codec.RowDecodeError as error:
        assert str(error)
        event("RowDecodeError")
        return
    event("decoded")
    assert isinstance(row, st_.EntityState)
    again = codec.encode_row(row)  # the worker writes a decoded row back after changing it
    assert codec.encode_row(codec.decode_row(again)) == again
    assert all(isinstance(e.other_id, str) for e in row.window) and isinstance(row.side, dict)
    assert type(row.n_ratings) is int and row.n_ratings >= 0


@examples(100)
@given(json_values)
def test_any_json_value_as_a_legacy_row_object(value):
    """Faust handed rows over as decoded JSON objects before the binary encoding: decode_row takes a dict."""
    try:
        row = codec.decode_row(value if isinstance(value, dict) else {"window": value})
    except codec.RowDecodeError:
        return
    assert codec.decode_row(codec.encode_row(row)) == row


@pytest.mark.parametrize("raw", [
    b"\xffRS",  # the magic, no header
    b"\xffRS\x01\xff\xff\xff\x7f{}",  # a header length beyond the row
    b"[1, 2]",  # JSON, not an object
    b'{"window": [["i1", 0.5]]}',  # a short window entry
    b'{"window": [["i1", 0.5, null, "x"]]}',  # ts not a number
    b'{"side": {"zip": "\\ud800"}}',  # a lone surrogate no row encoder takes
    b'{"n_ratings": -1}',
    b'{"seen": ["xyz"]}',
    b'{"vector": [1.0, 2.0], "window": [["u", 0.5, 1.0, 5.0, "AACAPw==", []]]}',  # two vector widths
], ids=["magic-only", "header-length", "json-list", "short-entry", "ts-text", "surrogate-side", "negative-count",
        "bad-digest", "two-widths"])
def test_undecodable_rows_raise_row_decode_error(raw):
    """Before the RowDecodeError contract these raised struct.error, KeyError, TypeError or ValueError, or decoded
    into rows that failed later, when the worker wrote them back (the whole batch then failed)."""
    with pytest.raises(codec.RowDecodeError):
        codec.decode_row(raw)


def test_a_header_describing_another_length_is_refused():
    row = st_.EntityState(window=[st_.WindowEntry("i", 0.5, None, 1.0)], vector=np.ones(3, np.float32))
    raw = codec.encode_row(row)
    header = header_of(raw)
    header["dim"] = 10**12  # a corrupt width must not allocate or read past the row
    with pytest.raises(codec.RowDecodeError, match="describes"):
        codec.decode_row(with_header(raw, header))


def test_a_negative_zero_feature_round_trips_byte_for_byte():
    """Found by test_rows_round_trip_through_both_encodings (explore profile): the decoder read feature values as
    v + 0.0, which turns -0.0 into 0.0, so a row read back was written as other bytes (the row cache keys on them)."""
    row = st_.EntityState(window=[st_.WindowEntry("0", None, None, 0.0, np.zeros(0, np.float32), ((0, -0.0),))])
    raw = codec.encode_row(row)
    assert codec.encode_row(codec.decode_row(raw)) == raw
