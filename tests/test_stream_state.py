"""Per-entity stream state: bounded windows, deduplication, side data (no Kafka)."""

from __future__ import annotations

import json

import numpy as np

from stream_app.stream import state as st


def test_window_is_bounded_and_counts_all_ratings():
    s = st.new_state()
    for k in range(5):
        assert st.add_rating(s, f"e{k}", f"i{k}", [0.5, 1.0], 100 + k, window=3)
    assert [e[0] for e in s["window"]] == ["i2", "i3", "i4"]
    assert s["n_ratings"] == 5
    assert st.window_columns(s) == (["i2", "i3", "i4"], [[0.5, 1.0]] * 3, [102.0, 103.0, 104.0])
    assert st.rated_ids(s) == {"i2", "i3", "i4"}


def test_duplicate_event_changes_nothing():
    s = st.new_state()
    assert st.add_rating(s, "e1", "i1", [0.5, None], 100, window=3)
    before = json.dumps(s)
    assert not st.add_rating(s, "e1", "i2", [1.0, 1.0], 200, window=3)
    assert json.dumps(s) == before
    # a side-data event may reuse a rating's event_id: separate namespaces
    assert st.update_side(s, "e1", {"gender": "F"}, window=3)
    assert not st.update_side(s, "e1", {"gender": "M"}, window=3)
    assert s["side"] == {"gender": "F"}


def test_dedup_horizon_is_bounded():
    s = st.new_state()
    horizon = st.dedup_size(2)
    assert horizon == 64
    for k in range(horizon + 10):
        st.add_rating(s, f"e{k}", "i", [0.0, 0.0], k, window=2)
    assert len(s["seen"]) == horizon
    assert st.is_duplicate(s, st.RATING + f"e{horizon + 9}") and not st.is_duplicate(s, st.RATING + "e0")
    assert all(len(d) == 12 for d in s["seen"])


def test_long_ids_do_not_bloat_the_state_and_vectors_pack_exactly():
    s = st.new_state()
    st.add_rating(s, "x" * 256, "i", [0.0, 0.0], 1, window=4)
    assert st.is_duplicate(s, st.RATING + "x" * 256) and len(json.dumps(s["seen"])) < 20
    v = np.array([0.1, -2.5, 1e-7, 3.0], np.float32)
    packed = st.pack_vector(v)
    assert isinstance(packed, str) and np.array_equal(st.unpack_vector(packed), v)


def test_side_data_merges_and_state_is_plain_json():
    s = st.new_state()
    st.update_side(s, "a", {"gender": "F", "age": 30}, window=4)
    st.update_side(s, "b", {"age": 40}, window=4)
    assert s["side"] == {"gender": "F", "age": 40}
    st.add_rating(s, "c", "i", [float("nan"), 1.0], 5, window=4, extra=[[0.1], [1.0]])
    assert s["window"][0] == ["i", None, 1.0, 5.0, [0.1], [1.0]]
    stored = st.set_vector(s, [0.123456789, -2.0], "m@1")
    assert stored == [0.123457, -2.0] and s["vector"] == stored and s["model_version"] == "m@1"
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_in_window_recognises_the_same_rating_only():
    s = st.new_state()
    st.add_rating(s, "e1", "i1", [0.5, None], 1000.0, 8)
    assert st.in_window(s, "i1", [0.5, float("nan")], 1000)
    assert not st.in_window(s, "i1", [0.5, None], 1001.0)
    assert not st.in_window(s, "i2", [0.5, None], 1000.0)
    assert not st.in_window(s, "i1", [1.0, None], 1000.0)
