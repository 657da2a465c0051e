"""Metrics shared by every protocol: rating errors, AUC and thumbs up/down accuracy."""

from __future__ import annotations

import numpy as np


def rating_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    if not len(err):
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(len(err))}


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN if one class is empty."""
    score, label = np.asarray(score, np.float64), np.asarray(label).astype(bool)
    n_pos, n_neg = int(label.sum()), int((~label).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score), np.float64)
    # average rank of each run of tied scores (ranks 1..n)
    starts = np.r_[0, np.nonzero(np.diff(sorted_scores))[0] + 1]
    ends = np.r_[starts[1:], len(score)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[label].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def thumbs_metrics(prob_up: np.ndarray, stars: np.ndarray, up_at: float = 4.0, threshold: float = 0.5) -> dict:
    """Seed 004 thumbs: truth = stars >= up_at (4-5 up, 1-3 down); `prob_up` a score where higher
    means up (a probability, or predicted stars with threshold 3.5). Accuracy at `threshold`, AUC."""
    truth = np.asarray(stars) >= up_at
    prob_up = np.asarray(prob_up, np.float64)
    if not len(truth):
        return {"accuracy": float("nan"), "auc": float("nan"), "up_rate": float("nan"), "n": 0}
    return {"accuracy": float(np.mean((prob_up >= threshold) == truth)), "auc": auc(prob_up, truth),
            "up_rate": float(truth.mean()), "n": int(len(truth))}
