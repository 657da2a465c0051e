"""Baselines on the same data pipeline: bias-only, biased MF by ALS (with closed-form fold-in),
and I-AutoRec (an item-based autoencoder over the sparse rating matrix, seed 003).

Each is a small estimator: `fit(train)`, `predict(user, item)` on dense indices, and for the
fold-in protocol `fold_in(side, entity, other_idx, ratings)` that never touches the rest.
"""

from __future__ import annotations

import time

import numpy as np

from stream_app.data.dataset import RatingData


def _grouped(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): rows of entity e are order[bounds[e]:bounds[e + 1]]."""
    order = np.argsort(index, kind="stable")
    return order, np.searchsorted(index[order], np.arange(n + 1))


class BiasOnly:
    """Global mean + damped user and item biases (alternating least squares, 3 sweeps)."""

    name = "bias-only"

    def __init__(self, damping: float = 5.0):
        self.damping = damping

    def fit(self, train: RatingData) -> BiasOnly:
        started = time.perf_counter()
        self.scale = train.rating_scale
        self.mu = float(train.rating.mean())
        self.bu, self.bi = np.zeros(train.n_users), np.zeros(train.n_items)
        for _ in range(3):
            self.bi = self._damped(train.item, train.rating - self.mu - self.bu[train.user], train.n_items)
            self.bu = self._damped(train.user, train.rating - self.mu - self.bi[train.item], train.n_users)
        self.train_seconds = time.perf_counter() - started
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.clip(self.mu + self.bu[user] + self.bi[item], *self.scale)

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None:
        own, opposite = (self.bu, self.bi) if side == "user" else (self.bi, self.bu)
        own[entity] = np.sum(ratings - self.mu - opposite[other_idx]) / (len(ratings) + self.damping)

    def _damped(self, index: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=n) / (np.bincount(index, minlength=n) + self.damping)


class ALSMF:
    """Biased matrix factorisation r = mu + b_u + b_i + p_u.q_i, fitted by alternating ridge solves.

    Fold-in of a new user (item) is the same closed-form ridge solve against the frozen item
    (user) factors and biases: what ALS-based systems do to absorb a new entity without retraining.
    """

    name = "als-mf"

    def __init__(self, factors: int = 32, reg: float = 8.0, bias_reg: float = 5.0, iterations: int = 15,
                 seed: int = 0):
        self.factors, self.reg, self.bias_reg, self.iterations, self.seed = factors, reg, bias_reg, iterations, seed

    def fit(self, train: RatingData) -> ALSMF:
        started = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        self.scale = train.rating_scale
        self.mu = float(train.rating.mean())
        self.p = rng.normal(0, 0.1, (train.n_users, self.factors))
        self.q = rng.normal(0, 0.1, (train.n_items, self.factors))
        self.bu, self.bi = np.zeros(train.n_users), np.zeros(train.n_items)
        by_user = _grouped(train.user, train.n_users)
        by_item = _grouped(train.item, train.n_items)
        for _ in range(self.iterations):
            self._sweep("user", train.user, train.item, train.rating, by_user)
            self._sweep("item", train.item, train.user, train.rating, by_item)
        self.train_seconds = time.perf_counter() - started
        return self

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        pred = self.mu + self.bu[user] + self.bi[item] + np.sum(self.p[user] * self.q[item], axis=1)
        return np.clip(pred, *self.scale)

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None:
        own_f, own_b, other_f, other_b = self._views(side)
        own_f[entity], own_b[entity] = self._solve(other_f[other_idx], ratings - self.mu - other_b[other_idx])

    def _views(self, side: str):
        if side == "user":
            return self.p, self.bu, self.q, self.bi
        return self.q, self.bi, self.p, self.bu

    def _sweep(self, side, own_index, other_index, rating, grouped) -> None:
        own_f, own_b, other_f, other_b = self._views(side)
        order, bounds = grouped
        for e in range(len(own_f)):
            rows = order[bounds[e]:bounds[e + 1]]
            if len(rows):
                o = other_index[rows]
                own_f[e], own_b[e] = self._solve(other_f[o], rating[rows] - self.mu - other_b[o])

    def _solve(self, other_factors: np.ndarray, residual: np.ndarray) -> tuple[np.ndarray, float]:
        """Ridge solve of [factors, bias] for one entity; penalties scale with its rating count."""
        x = np.column_stack([other_factors, np.ones(len(residual))])
        penalty = np.full(self.factors + 1, self.reg)
        penalty[-1] = self.bias_reg
        w = np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ residual)
        return w[:-1], float(w[-1])
