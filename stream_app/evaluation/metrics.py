"""Metrics shared by every protocol: rating errors, AUC, thumbs up/down accuracy, and the paired
bootstrap interval of an RMSE difference over entities."""

from __future__ import annotations

import numpy as np


def rating_metrics(pred: np.ndarray, truth: np.ndarray) -> dict:
    err = np.asarray(pred, np.float64) - np.asarray(truth, np.float64)
    if not len(err):
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err))), "n": int(len(err))}


HISTORY_BINS = (0, 20, 50, 100, 200)  # lower edges of the bins of an entity's training ratings


def rmse_by_history(pred: np.ndarray, truth: np.ndarray, history: np.ndarray,
                    edges: tuple[int, ...] = HISTORY_BINS) -> dict[str, dict]:
    """RMSE of the test ratings binned by how many training ratings their user (or item) had:
    {"0-19": {"n", "rmse"}, ..., "200+": ...}; empty bins are left out.

    >>> rmse_by_history(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 3.0]), np.array([5, 30, 300]), (0, 20))
    {'0-19': {'n': 1, 'rmse': 0.0}, '20+': {'n': 2, 'rmse': 0.7071067811865476}}
    """
    out = {}
    for k, lo in enumerate(edges):
        hi = edges[k + 1] if k + 1 < len(edges) else None
        chosen = (history >= lo) & (history < hi) if hi is not None else history >= lo
        if chosen.any():
            name = f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"
            out[name] = {"n": int(chosen.sum()),
                         "rmse": float(np.sqrt(np.mean((pred[chosen] - truth[chosen]) ** 2)))}
    return out


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


def paired_bootstrap_rmse(entity: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, truth: np.ndarray,
                          n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """RMSE(a) - RMSE(b) on the same rows, and its paired bootstrap `level` interval (percentile) over
    entities: each replicate resamples the entities (users or items) with replacement and keeps all
    the rows of each drawn entity for both systems, so the interval reflects which entities happened
    to be held out. Negative = a has the lower error."""
    truth = np.asarray(truth, np.float64)
    ids, inv = np.unique(np.asarray(entity), return_inverse=True)
    n_entities = len(ids)
    if not n_entities:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan"), "level": level,
                "entities": 0, "n_boot": n_boot, "seed": seed}
    sse_a = np.bincount(inv, (np.asarray(pred_a, np.float64) - truth) ** 2, n_entities)
    sse_b = np.bincount(inv, (np.asarray(pred_b, np.float64) - truth) ** 2, n_entities)
    rows = np.bincount(inv, minlength=n_entities).astype(np.float64)
    rng = np.random.default_rng(seed)
    diffs = []
    for start in range(0, n_boot, 256):  # weights in blocks: [block, entities] at a time
        w = rng.multinomial(n_entities, np.full(n_entities, 1.0 / n_entities), size=min(256, n_boot - start))
        total = w @ rows
        diffs.append(np.sqrt(w @ sse_a / total) - np.sqrt(w @ sse_b / total))
    low, high = np.quantile(np.concatenate(diffs), [(1 - level) / 2, (1 + level) / 2])
    return {"diff": float(np.sqrt(sse_a.sum() / rows.sum()) - np.sqrt(sse_b.sum() / rows.sum())),
            "low": float(low), "high": float(high), "level": level, "entities": int(n_entities),
            "n_boot": int(n_boot), "seed": int(seed)}
