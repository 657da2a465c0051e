"""bench/accuracy.py: its summary table and quick labelling (the bench itself is run by hand)."""

import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_accuracy", Path(__file__).parents[1] / "bench" / "accuracy.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_summary_has_one_row_per_system_and_labels_quick_runs():
    results = {"warm": {"protocol": "warm", "systems": {"aevec": {"rmse": 0.95}, "surprise-svd": {"rmse": 0.96}}},
               "foldin-users": {"protocol": "foldin-users",
                                "systems": {"als-mf-foldin": {"1": {"rmse": 1.1}, "5": {"rmse": 1.0}},
                                            "als-mf-retrain": {"5": {"rmse": 0.99}}}},
               "topn": {"protocol": "topn", "systems": {"aevec": {"ndcg": 0.1}}}}
    text = bench.summary(results, quick=True)
    assert text.startswith("QUICK RUN")
    lines = text.splitlines()
    assert "warm rmse" in lines[1] and "users k=5" in lines[1] and "ndcg@10" in lines[1]
    assert [line.split()[0] for line in lines[3:]] == ["aevec", "surprise-svd", "als-mf-foldin", "als-mf-retrain"]
    assert "QUICK" not in bench.summary(results, quick=False)


def test_unknown_protocol_is_refused(monkeypatch):
    monkeypatch.setenv("RECSYS_DATA_MIRROR", "")
    with pytest.raises(SystemExit):
        bench.main(["--data", "synthetic", "--split", "random", "--protocols", "nope", "--out", "/nonexistent/x"])


def test_across_splits_gives_mean_and_sample_spread_per_system_and_column():
    per_split = {f"u{j}": {"warm": {"protocol": "warm", "systems": {"als-mf": {"rmse": r}}},
                           "topn": {"protocol": "topn", "systems": {"ease": {"ndcg": n}}}}
                 for j, (r, n) in enumerate([(0.90, 0.30), (0.92, 0.34), (0.94, 0.32)], 1)}
    stats = bench.across_splits(per_split)
    assert stats["als-mf"]["warm rmse"]["mean"] == pytest.approx(0.92)
    assert stats["als-mf"]["warm rmse"]["std"] == pytest.approx(0.02)  # ddof 1
    assert stats["ease"]["ndcg@10"] == {"mean": pytest.approx(0.32), "std": pytest.approx(0.02), "n": 3}
    table = bench.spread_table(stats)
    assert "0.9200 ± 0.0200" in table and "ndcg@10" in table.splitlines()[0]
