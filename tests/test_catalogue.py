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


def test_derived_arrays_follow_upserts_row_by_row_or_in_full():
    rng = np.random.default_rng(0)
    cat = Catalogue([f"i{k}" for k in range(40)], rng.normal(size=(40, 3)), rng.normal(size=(40, 2)),
                    counts=rng.integers(0, 9, 40))
    calls = []

    def compute(v, f, counts):
        calls.append(len(v))
        return v @ np.ones(3) + f.sum(1) + counts, np.hstack([v, f])

    def full():
        return compute(cat.vectors, cat.features, cat.counts)

    assert calls == [] and cat.derived("x", compute)[0].shape == (40,) and calls == [40]
    cat.upsert("i3", vector=np.full(3, 9.0))
    cat.upsert("i7", count=100)
    cat.upsert("i3", features=np.ones(2))
    got = cat.derived("x", compute)
    assert calls[-1] == 2  # only the two changed rows computed again
    expected = full()
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e)
    assert cat.derived("x", compute) is got and calls[-1] == 40  # unchanged: cached (full() was the last call)
    cat.upsert("new", vector=np.zeros(3))  # a new row: computed in full
    assert len(cat.derived("x", compute)[0]) == 41 and calls[-2:] == [40, 41]
    for k in range(10):  # more changes than an eighth of the rows: in full
        cat.upsert(f"i{k}", count=k)
    np.testing.assert_allclose(cat.derived("x", compute)[0], full()[0])
    assert calls[-2] == 41
