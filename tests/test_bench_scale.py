"""bench/scale.py: its size parsing, I-AutoRec's item sample and the summary table (the bench itself,
children and all, is run by hand)."""

import importlib.util
from pathlib import Path

import numpy as np

from stream_app.data.synthetic import make_synthetic

spec = importlib.util.spec_from_file_location("bench_scale", Path(__file__).parents[1] / "bench" / "scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_sizes_parse_as_users_by_items():
    assert bench.parse_sizes("6040x3706, 200000X40000") == [(6040, 3706), (200000, 40000)]


def test_autorec_item_sample_keeps_every_user_and_only_the_sampled_items():
    data = make_synthetic(n_users=40, n_items=30, mean_ratings_per_user=10, seed=1)
    part = bench.item_sample(data, 7)
    assert part.n_users == data.n_users and part.n_items == 7
    assert np.all(part.item < 7) and len(part) == int(np.sum(data.item < 7))


def test_table_has_a_row_per_size_and_system_with_bytes_per_rating_and_skips():
    ours = {"generate": {"ratings": 2**20}, "peak_mib": 300.0,
            "train": {"seconds_per_epoch": 12.5, "refinement_seconds": 3.0},
            "foldin": {"user": {"vectors_per_second": 900.0}}, "top10": {"median_ms": 4.0},
            "full_run_projected": {"seconds": 5400.0}}
    results = {"sizes": {"10x5": {"ours": ours, "i-autorec": {"skipped": "child exited -9"}}}}
    lines = bench.table(results).splitlines()
    assert len(lines) == 4
    assert lines[2].split() == ["10x5", "1048576", "ours", "300", "300", "12.5", "3.0", "900", "4.00", "1.5"]
    assert "skipped: child exited -9" in lines[3]


def test_marginal_bytes_per_rating_leaves_out_the_fixed_cost_and_skipped_sizes():
    def ours(ratings, mib):
        return {"ours": {"generate": {"ratings": ratings}, "peak_mib": mib}}

    results = {"sizes": {"a": ours(1000, 250.0), "b": ours(3000, 252.0), "c": {"ours": {"skipped": "out of memory"}}}}
    assert bench.marginal_bytes_per_rating(results) == 2 * 2**20 / 2000
    assert bench.marginal_bytes_per_rating(results, "i-autorec") is None
