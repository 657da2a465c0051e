"""bench/warm_folds.py: per-split warm RMSE summarised into mean and spread."""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location("warm_folds", Path(__file__).parents[1] / "bench" / "warm_folds.py")
warm_folds = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(warm_folds)


def run(split: str, ours: float, als: float) -> dict:
    return {"protocol": "warm", "data": "ml-100k", "split": split, "hyperparameter_source": "validation",
            "systems": {"aevec": {"rmse": ours, "model_version": f"m-{split}"}, "als-mf": {"rmse": als}}}


def test_folds_are_summarised_per_system(tmp_path):
    summary = warm_folds.summarise([run("u1", 0.90, 0.93), run("u2", 0.92, 0.91)])
    assert summary["splits"] == ["u1", "u2"]
    assert summary["systems"]["aevec"]["mean"] == pytest.approx(0.91)
    assert summary["systems"]["aevec"]["sd"] == pytest.approx(0.0141421, rel=1e-4)
    assert summary["systems"]["als-mf"]["per_split"] == {"u1": 0.93, "u2": 0.91}
    assert "| aevec | 0.9000 | 0.9200 | 0.9100 (0.0141) |" in warm_folds.table(summary)
