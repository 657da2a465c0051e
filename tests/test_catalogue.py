import numpy as np

from stream_app.core.catalogue import Catalogue


def test_catalogue_grows_and_updates_in_place():
    cat = Catalogue(["a", "b"], np.ones((2, 3)), np.zeros((2, 2)))
    assert len(cat) == 2 and "a" in cat and 7 not in cat
    v0 = cat.version
    row = cat.upsert(7, vector=np.full(3, 2.0))
    assert row == 2 and cat.index_of("7") == 2 and cat.version > v0
    assert np.array_equal(cat.vectors[2], [2, 2, 2]) and np.array_equal(cat.features[2], [0, 0])
    for k in range(40):  # several capacity doublings keep old rows intact
        cat.upsert(f"n{k}", features=np.array([k, 1.0]))
    assert len(cat) == 43 and cat.vectors.shape == (43, 3) and cat.features[-1].tolist() == [39, 1]
    assert np.array_equal(cat.vectors[:2], np.ones((2, 3)))
    cat.upsert("a", vector=np.zeros(3))
    assert np.array_equal(cat.vectors[0], np.zeros(3)) and len(cat) == 43
    assert cat.ids[:3] == ["a", "b", "7"]


def test_catalogue_keeps_rating_counts():
    cat = Catalogue(["a", "b"], np.ones((2, 3)), np.zeros((2, 2)), counts=np.array([5, 0]))
    assert cat.counts.tolist() == [5, 0]
    cat.upsert("b", count=2)
    for k in range(20):  # growth keeps counts, new rows start at 0
        cat.upsert(f"n{k}", vector=np.zeros(3))
    cat.upsert("n3", count=7)
    assert cat.counts[:2].tolist() == [5, 2] and cat.counts[cat.index_of("n3")] == 7
    assert cat.counts[cat.index_of("n4")] == 0 and len(cat.counts) == 22
    assert Catalogue(["x"], np.ones((1, 3)), np.zeros((1, 2))).counts.tolist() == [0]
