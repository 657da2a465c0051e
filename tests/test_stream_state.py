"""Per-entity stream state: bounded windows, deduplication, side data, the stored encoding (no Kafka)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from stream_app.stream import codec
from stream_app.stream import state as st


def test_window_is_bounded_and_counts_all_ratings():
    s = st.new_state()
    for k in range(5):
        assert st.add_rating(s, f"e{k}", f"i{k}", [0.5, 1.0], 100 + k, window=3)
    assert [e.other_id for e in s.window] == ["i2", "i3", "i4"]
    assert s.n_ratings == 5
    assert st.window_columns(s) == (["i2", "i3", "i4"], [[0.5, 1.0]] * 3, [102.0, 103.0, 104.0])
    assert st.rated_ids(s) == {"i2", "i3", "i4"}


def test_duplicate_event_changes_nothing():
    s = st.new_state()
    assert st.add_rating(s, "e1", "i1", [0.5, None], 100, window=3)
    before = codec.encode_row(s)
    assert not st.add_rating(s, "e1", "i2", [1.0, 1.0], 200, window=3)
    assert codec.encode_row(s) == before
    # a side-data event may reuse a rating's event_id: separate namespaces
    assert st.update_side(s, "e1", {"gender": "F"}, window=3)
    assert not st.update_side(s, "e1", {"gender": "M"}, window=3)
    assert s.side == {"gender": "F"}


def test_dedup_horizon_is_bounded():
    s = st.new_state()
    horizon = st.dedup_size(2)
    assert horizon == 64
    for k in range(horizon + 10):
        st.add_rating(s, f"e{k}", "i", [0.0, 0.0], k, window=2)
    assert len(s.seen) == horizon
    assert st.is_duplicate(s, st.RATING + f"e{horizon + 9}") and not st.is_duplicate(s, st.RATING + "e0")
    assert all(len(d) == 12 for d in s.seen)


def test_long_ids_do_not_bloat_the_state_and_vectors_pack_exactly():
    s = st.new_state()
    st.add_rating(s, "x" * 256, "i", [0.0, 0.0], 1, window=4)
    assert st.is_duplicate(s, st.RATING + "x" * 256) and len(json.dumps(s.seen)) < 20
    v = np.array([0.1, -2.5, 1e-7, 3.0], np.float32)
    packed = st.pack_vector(v)
    assert isinstance(packed, str) and np.array_equal(st.unpack_vector(packed), v)


def test_side_data_merges_and_vectors_are_rounded_float32():
    s = st.new_state()
    st.update_side(s, "a", {"gender": "F", "age": 30}, window=4)
    st.update_side(s, "b", {"age": 40}, window=4)
    assert s.side == {"gender": "F", "age": 40}
    st.add_rating(s, "c", "i", [float("nan"), 1.0], 5, window=4, vector=[0.1], features=[(1, 1.0)])
    assert s.window[0][:4] == ("i", None, 1.0, 5.0) and s.window[0].features == ((1, 1.0),)
    stored = st.set_vector(s, [0.123456789, -2.0], "m@1")
    assert stored.dtype == np.float32 and np.allclose(stored, [0.123457, -2.0]) and s.model_version == "m@1"


def test_in_window_recognises_the_same_rating_only():
    s = st.new_state()
    st.add_rating(s, "e1", "i1", [0.5, None], 1000.0, 8)
    assert st.in_window(s, "i1", [0.5, float("nan")], 1000)
    assert not st.in_window(s, "i1", [0.5, None], 1001.0)
    assert not st.in_window(s, "i2", [0.5, None], 1000.0)
    assert not st.in_window(s, "i1", [1.0, None], 1000.0)


def item_row(n: int = 64, dim: int = 33) -> st.EntityState:
    rng = np.random.default_rng(0)
    s = st.new_state()
    st.update_side(s, "side-1", {"genres": ["Drama"], "year": 1999}, window=n)
    for k in range(n):
        st.add_rating(s, f"event-{k}", f"user-{k}", [k / n, None if k % 3 else 1.0], 1.7e9 + k / 7, window=n,
                      vector=rng.normal(size=dim), features=[(k % 5, 1.0), (7, 0.25)])
    st.set_vector(s, rng.normal(size=dim), "model@1")
    return s


@pytest.mark.parametrize("row", [st.new_state(), item_row(), item_row(0)], ids=["empty", "item", "no-window"])
def test_rows_round_trip_through_the_binary_encoding(row):
    raw = codec.encode_row(row)
    assert raw[:3] == codec.MAGIC and raw[3] == codec.VERSION
    back = codec.decode_row(raw)
    assert back == row and codec.encode_row(back) == raw


def test_user_rows_round_trip_with_exact_rates_for_redelivery_checks():
    s = st.new_state()
    st.add_rating(s, "e1", "i1", [1 / 3, None], 1_700_000_000.123456, 8)
    back = codec.decode_row(codec.encode_row(s))
    assert back == s and st.in_window(back, "i1", [1 / 3, None], 1_700_000_000.123456)
    assert back.window[0].vector is None and back.window[0].features is None


def test_the_binary_encoding_is_smaller_than_the_json_one():
    row = item_row()
    legacy = legacy_json(row)
    assert codec.decode_row(legacy) == row
    assert len(codec.encode_row(row)) < 0.8 * len(legacy)


def legacy_json(s: st.EntityState) -> bytes:
    """A row as the JSON encoding (before codec version 1) wrote it."""
    pack = lambda v: base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()  # noqa: E731
    window = [[e.other_id, e.stars, e.thumbs, e.ts] + ([pack(e.vector), [list(p) for p in e.features]]
                                                       if e.vector is not None else []) for e in s.window]
    return json.dumps({"window": window, "side": s.side, "n_ratings": s.n_ratings, "seen": s.seen,
                       "model_version": s.model_version,
                       "vector": None if s.vector is None else [float(x) for x in s.vector]}).encode()


def test_rows_of_the_old_json_encoding_are_still_read():
    old = (b'{"window": [["i1", 0.5, null, 100.0], ["i2", -1.0, 1.0, 101.0]], "side": {"gender": "F"},'
           b' "vector": [0.25, -0.5], "n_ratings": 7, "seen": ["0123456789ab"], "model_version": "m@1"}')
    s = codec.decode_row(old)
    assert [e[:4] for e in s.window] == [("i1", 0.5, None, 100.0), ("i2", -1.0, 1.0, 101.0)]
    assert s.side == {"gender": "F"} and s.n_ratings == 7 and s.seen == ["0123456789ab"]
    assert s.vector.dtype == np.float32 and np.allclose(s.vector, [0.25, -0.5]) and s.model_version == "m@1"
    item = codec.decode_row(b'{"window": [["u1", 0.5, 1.0, 5.0, "' + st.pack_vector([1.0, 2.0]).encode()
                            + b'", [[3, 1.0]]]], "side": {}, "vector": null, "n_ratings": 1, "seen": []}')
    assert np.array_equal(item.window[0].vector, [1.0, 2.0]) and item.window[0].features == ((3, 1.0),)
    assert item.vector is None and item.model_version is None
    assert codec.decode_row(codec.encode_row(item)) == item  # written back in the new encoding


def test_an_unknown_encoding_version_is_refused():
    raw = bytearray(codec.encode_row(item_row(2)))
    raw[3] = 99
    with pytest.raises(ValueError, match="version 99"):
        codec.decode_row(bytes(raw))


def test_the_row_cache_returns_a_row_only_for_the_bytes_it_was_written_as():
    cache = codec.RowCache(size=2)
    row = item_row(3)
    raw = codec.encode_row(row)
    cache.put("i1", raw, row)
    assert cache.take("i1", raw) is row  # the same bytes: the decoded row itself
    assert cache.take("i1", raw) is not row and cache.take("i1", raw) == row  # taken: decoded again
    cache.put("i1", raw, row)
    other = codec.encode_row(item_row(4))
    assert cache.take("i1", other) == codec.decode_row(other)  # stored bytes differ (another writer)
    for key in ("a", "b", "c"):
        cache.put(key, raw, row)
    assert cache.take("a", raw) is not row and cache.take("c", raw) is row  # the oldest was dropped
    assert cache.take("x", None) is None
    cache.put("b", raw, row)
    cache.clear()  # a rebalance: nothing kept
    assert cache.take("b", raw) is not row and cache.take("b", raw) == row
