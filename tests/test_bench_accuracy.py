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
