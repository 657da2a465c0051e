"""Bias-only baseline: global mean + damped user and item biases."""

from __future__ import annotations

import time

import numpy as np

from stream_app.data.dataset import RatingData


class BiasOnly:
    """Global mean + damped user and item biases (alternating least squares, 3 sweeps)."""

    name = "bias-only"
    grid = {"damping": (1.0, 3.0, 5.0, 10.0, 25.0)}  # chosen on validation data (evaluation.tuning)

    def __init__(self, damping: float = 5.0):
        self.damping = damping

    def fit(self, train: RatingData) -> BiasOnly:
        started = time.perf_counter()
        self.scale = train.rating_scale
        self.n_users, self.n_items = train.n_users, train.n_items
        self.mu = float(train.rating.mean())
        self.bu, self.bi = np.zeros(train.n_users), np.zeros(train.n_items)
        for _ in range(3):
            self.bi = self._damped(train.item, train.rating - self.mu - self.bu[train.user], train.n_items)
            self.bu = self._damped(train.user, train.rating - self.mu - self.bi[train.item], train.n_users)
        self.train_seconds = time.perf_counter() - started
        return self

    def score(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Unclipped predictions (for ranking)."""
        return self.mu + self.bu[user] + self.bi[item]

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.clip(self.score(user, item), *self.scale)

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None:
        own, opposite = (self.bu, self.bi) if side == "user" else (self.bi, self.bu)
        own[entity] = np.sum(ratings - self.mu - opposite[other_idx]) / (len(ratings) + self.damping)

    def _damped(self, index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=n) / (np.bincount(index, minlength=n) + self.damping)
