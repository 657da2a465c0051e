"""The synthetic generator's batched sampler (large catalogues): the same per-user counts and the same
item distribution as the per-user Gumbel sampler, distinct pairs, no user x catalogue arrays."""

import numpy as np
import pytest

from stream_app.data import synthetic
from stream_app.data.synthetic import make_synthetic

SIZE = dict(n_users=3000, n_items=60, mean_ratings_per_user=12, seed=4)


@pytest.fixture(scope="module")
def both():
    gumbel = make_synthetic(**SIZE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "GUMBEL_KEYS", 0)  # force the batched sampler on small data
        batched = make_synthetic(**SIZE)
        again = make_synthetic(**SIZE)
    return gumbel, batched, again


def test_batched_pairs_are_distinct_and_deterministic(both):
    _, batched, again = both
    pairs = batched.user * batched.n_items + batched.item
    assert len(np.unique(pairs)) == len(pairs)
    assert np.array_equal(batched.user, again.user) and np.array_equal(batched.item, again.item)


def test_batched_gives_every_user_its_drawn_count(both):
    gumbel, batched, _ = both
    per_user = np.bincount(batched.user, minlength=batched.n_users)
    assert np.array_equal(per_user, np.bincount(gumbel.user, minlength=gumbel.n_users))
    assert per_user.max() == int(0.6 * SIZE["n_items"])  # the heaviest users need the Gumbel finish


def test_batched_draws_items_like_the_gumbel_sampler(both):
    gumbel, batched, _ = both
    a = np.bincount(gumbel.item, minlength=gumbel.n_items) / len(gumbel)
    b = np.bincount(batched.item, minlength=batched.n_items) / len(batched)
    assert np.corrcoef(a, b)[0, 1] > 0.99
    assert np.abs(a - b).max() < 0.01
