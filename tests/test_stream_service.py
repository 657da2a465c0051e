"""FoldInService: bootstrap from the artifact, batched fold-in, cold start, catalogue, top-N (no Kafka)."""

from __future__ import annotations

import numpy as np
import pytest
from stream_harness import tiny_recommender

from stream_app.stream import service as service_module
from stream_app.stream import state as st
from stream_app.stream.service import FoldInService, Query


@pytest.fixture(scope="module")
def rec():
    return tiny_recommender()


@pytest.fixture
def svc(rec):
    return FoldInService(rec, window_user=8, window_item=8)


def count_fold_ins(monkeypatch, rec) -> list:
    calls = []
    original = rec.fold_in

    def spy(side, record_sets, *args, **kwargs):
        calls.append((side, len(record_sets)))
        return original(side, record_sets, *args, **kwargs)

    monkeypatch.setattr(rec, "fold_in", spy)
    return calls


def history_of(rec, side, index):
    h = rec.history
    mask = (h.user if side == "user" else h.item) == index
    rows = np.nonzero(mask)[0]
    return rows[np.argsort(h.ts[rows], kind="stable")]


def test_bootstrap_seeds_the_window_from_training_history(rec, svc):
    index = int(np.argmax(np.bincount(rec.history.user)))  # the most active user: more than a window
    uid = rec.ids["user"][index]
    rows = history_of(rec, "user", index)
    assert len(rows) > 8
    s = svc.bootstrap_state("user", uid)
    assert s.n_ratings == len(rows) and len(s.window) == 8
    assert [e.other_id for e in s.window] == [rec.ids["item"][i] for i in rec.history.item[rows[-8:]]]
    assert [e.ts for e in s.window] == [float(t) for t in rec.history.ts[rows[-8:]]]
    assert np.allclose(s.vector, rec.vectors["user"][index], atol=1e-6)
    assert svc.bootstrap_state("user", "never-seen") is None
    assert svc.initial_state("user", "never-seen") == st.new_state()


def test_bootstrapped_item_window_carries_rater_vectors(rec, svc):
    s = svc.bootstrap_state("item", rec.ids["item"][0])
    entry = s.window[-1]
    rater = rec.index["user"][entry.other_id]
    assert np.array_equal(entry.vector, rec.vectors["user"][rater])
    dense = st.to_dense([entry.features], rec.schema.user_dim)[0]
    assert np.allclose(dense, rec.features["user"][rater]) and len(entry.features) < rec.schema.user_dim


def test_user_fold_in_is_one_call_and_matches_the_recommender(rec, svc, monkeypatch):
    uids = rec.ids["user"][:5]
    states = {u: svc.bootstrap_state("user", u) for u in uids}
    states["new-user"] = st.new_state()
    st.update_side(states["new-user"], "e0", {"gender": "F", "age": 30}, window=8)
    calls = count_fold_ins(monkeypatch, rec)
    out = svc.fold_in_users(states)
    assert calls == [("user", 6)]
    for u in uids:
        items, rates, ts = st.window_columns(states[u])
        stars = rec.schema.decode_stars(np.array([r[0] for r in rates]))
        expected = rec.vector_for_user(items, stars, ts, user_id=u)
        assert np.allclose(out[u], expected, atol=1e-5)
    assert np.allclose(out["new-user"], rec.cold_vector("user", {"gender": "F", "age": 30}), atol=1e-6)
    # batch invariance: alone or in a batch, the same vector
    alone = svc.fold_in_users({uids[2]: states[uids[2]]})
    assert np.allclose(alone[uids[2]], out[uids[2]], atol=1e-6)


def test_a_rating_moves_the_vector_and_unknown_items_do_not_crash(rec, svc):
    u = rec.ids["user"][1]
    s = svc.bootstrap_state("user", u)
    before = svc.fold_in_users({u: s})[u]
    assert st.add_rating(s, "new-event", "brand-new-item", [1.0, 1.0], 1.7e9, window=8)
    after = svc.fold_in_users({u: s})[u]
    assert np.all(np.isfinite(after)) and not np.allclose(before, after)


def test_item_fold_in_adds_new_items_to_the_catalogue(rec, svc, monkeypatch):
    n0 = len(svc.catalogue)
    known = rec.ids["item"][int(np.argmax(np.bincount(rec.history.item)))]
    states = {known: svc.bootstrap_state("item", known), "new-item": st.new_state(), "rated-new": st.new_state()}
    st.update_side(states["new-item"], "s1", {"genres": ["Drama"], "year": 1999}, window=8)
    ufeat = svc.rater_features(rec.ids["user"][0], None)
    st.add_rating(states["rated-new"], "r1", rec.ids["user"][0], [0.5, 1.0], 1.7e9, window=8,
                  vector=rec.vectors["user"][0], features=ufeat)
    calls = count_fold_ins(monkeypatch, rec)
    out = svc.fold_in_items(states)
    assert calls == [("item", 3)]
    assert len(svc.catalogue) == n0 + 2
    row = svc.catalogue.index_of("new-item")
    assert np.allclose(out["new-item"], rec.cold_vector("item", {"genres": ["Drama"], "year": 1999}), atol=1e-6)
    assert np.allclose(svc.catalogue.vectors[row], out["new-item"])
    assert np.allclose(svc.catalogue.features[row], rec.schema.encode_item({"genres": ["Drama"], "year": 1999}))
    assert np.allclose(svc.catalogue.vectors[svc.catalogue.index_of(known)], out[known])
    # the item's vector from its bootstrapped window equals the recommender's fold-in of the same ratings
    users, rates, ts = st.window_columns(states[known])
    stars = rec.schema.decode_stars(np.array([r[0] for r in rates]))
    assert np.allclose(out[known], rec.vector_for_item(users, stars, ts, item_id=known), atol=1e-5)


def test_recommend_excludes_rated_items_and_matches_the_recommender(rec, svc):
    index = 4
    u = rec.ids["user"][index]
    s = svc.bootstrap_state("user", u)
    st.add_rating(s, "x1", rec.ids["item"][0], [1.0, 1.0], 1.7e9, window=8)
    top = svc.recommend(u, s, n=5, ts=1.7e9)
    counts = svc.catalogue.counts[[svc.catalogue.index_of(i) for i, _ in top]]
    ranks = rec.rank_scores(np.array([sc for _, sc in top]), counts)
    assert len(top) == 5 and list(ranks) == sorted(ranks, reverse=True)
    rated = set(rec.ids["item"][i] for i in rec.rated_items(index)) | {rec.ids["item"][0]}
    assert not rated & {i for i, _ in top}
    exclude = {rec.index["item"][i] for i in rated}
    expected = rec.recommend(np.asarray(s.vector, np.float32), rec.features["user"][index], 5, exclude, ts=1.7e9)
    assert [(rec.ids["item"][i], pytest.approx(sc, abs=1e-5)) for i, sc in expected] == top


def test_rank_scores_are_what_the_list_is_ranked_by(rec, svc):
    top = svc.recommend("stranger", None, n=8, ts=1.7e9)
    ranks = svc.rank_scores(top)
    assert len(ranks) == 8 and ranks == sorted(ranks, reverse=True)
    counts = rec.item_counts[[rec.index["item"][i] for i, _ in top]]
    assert np.allclose(ranks, rec.rank_scores(np.array([s for _, s in top]), counts))
    assert svc.rank_scores([]) == []


def test_cold_user_gets_a_full_list_and_batches_agree(rec, svc, monkeypatch):
    top = svc.recommend("stranger", None, n=7, ts=1.7e9)
    assert len(top) == 7
    assert svc.recommend("stranger", None, n=10_000, ts=1.7e9)[:7] == top
    assert len(svc.recommend("stranger", None, n=10_000, ts=1.7e9)) == len(svc.catalogue)
    queries = [Query(rec.ids["user"][k], None, 3, 1.7e9) for k in range(9)] + [Query("stranger", None, 7, 1.7e9)]
    together = svc.recommend_many(queries)
    monkeypatch.setattr(service_module, "ROWS_PER_PREDICT", len(svc.catalogue) * 2)  # 2 users per call
    assert _same(svc.recommend_many(queries), together)
    assert together[-1] == top


def _same(a, b) -> bool:
    return all([i for i, _ in x] == [i for i, _ in y] and np.allclose([s for _, s in x], [s for _, s in y], atol=1e-5)
               for x, y in zip(a, b, strict=True))


def test_streamed_item_counts_reach_the_ranking(rec, svc, monkeypatch):
    """The catalogue keeps each item's rating count (training history, then the item state's n_ratings),
    and top-N lists rank with it: a streamed item that gets many ratings climbs."""
    assert np.array_equal(svc.catalogue.counts, rec.item_counts)
    state = st.new_state()
    for k in range(3):
        st.add_rating(state, f"pop-{k}", rec.ids["user"][k], [0.5, 1.0], 1.7e9 + k, window=8,
                      vector=rec.vectors["user"][k], features=())
    svc.fold_in_items({"hit": state})
    row = svc.catalogue.index_of("hit")
    assert svc.catalogue.counts[row] == 3
    monkeypatch.setattr(rec.config, "popularity_weight", 0.0)
    before = [i for i, _ in svc.recommend("stranger", None, n=len(svc.catalogue), ts=1.7e9)].index("hit")
    svc.catalogue.upsert("hit", count=1e6)  # as a catalogue entry from another worker would set it
    monkeypatch.setattr(rec.config, "popularity_weight", 0.5)
    assert svc.recommend("stranger", None, n=1, ts=1.7e9)[0][0] == "hit" and before > 0


def test_two_stage_top_n_finds_the_exact_lists_and_excludes_rated_items(rec):
    from stream_app.core.candidates import TwoStage, recall_at

    exact = FoldInService(rec, window_user=8, window_item=8)
    two = FoldInService(rec, window_user=8, window_item=8, two_stage=TwoStage(exact_max=0, probes=30, candidates=20))
    queries = [Query(rec.ids["user"][k], exact.bootstrap_state("user", rec.ids["user"][k]), 5, 1.7e9)
               for k in range(20)]
    got, want = two.recommend_many(queries), exact.recommend_many(queries)
    assert recall_at(5, got, want) >= 0.9
    for q, top in zip(queries, got, strict=True):
        assert len(top) == 5 and not {i for i, _ in top} & st.rated_ids(q.state)
        ranks = rec.rank_scores(np.array([s for _, s in top]), two.catalogue.counts[[two.catalogue.index_of(i)
                                                                                      for i, _ in top]])
        assert list(ranks) == sorted(ranks, reverse=True)


def test_an_item_without_training_ratings_bootstraps_an_empty_window(rec, svc):
    counts = np.bincount(rec.history.item, minlength=len(rec.ids["item"]))
    unrated = np.flatnonzero(counts == 0)
    if not len(unrated):
        pytest.skip("every trained item has ratings here")
    s = svc.bootstrap_state("item", rec.ids["item"][unrated[0]])
    assert s.window == [] and s.n_ratings == 0 and s.vector is not None
