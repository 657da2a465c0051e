"""Evaluation: metrics (metrics.py), the splits protocols make (splits.py), the protocols
themselves (protocols/, one module each) and their plots (plots.py).

The names below are re-exported for callers that import them from `stream_app.evaluation`.
"""

from __future__ import annotations

from stream_app.evaluation.metrics import auc, rating_metrics, thumbs_metrics
from stream_app.evaluation.splits import HoldOut, hold_out, reveal

__all__ = ["HoldOut", "auc", "baseline_foldin_predictions", "foldin_predictions", "hold_out", "rating_metrics",
           "reveal", "thumbs_metrics"]


def __getattr__(name: str):
    """foldin_predictions / baseline_foldin_predictions, imported on first use (no import cycle)."""
    if name in ("foldin_predictions", "baseline_foldin_predictions"):
        import importlib

        return getattr(importlib.import_module("stream_app.evaluation.protocols.foldin"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
