"""Biased matrix factorisation by alternating least squares, with closed-form fold-in."""

from __future__ import annotations

import time

import numpy as np

from stream_app.data.dataset import RatingData, group_rows


class ALSMF:
    """Biased matrix factorisation r = mu + b_u + b_i + p_u.q_i, fitted by alternating ridge solves.

    Fold-in of a new user (item) is the same closed-form ridge solve against the frozen item
    (user) factors and biases: what ALS-based systems do to absorb a new entity without retraining.
    """

    name = "als-mf"
    grid = {"reg": (2.0, 4.0, 8.0, 16.0, 32.0)}  # chosen on validation data (evaluation.tuning)

    def __init__(self, factors: int = 32, reg: float = 8.0, bias_reg: float = 5.0, iterations: int = 15,
                 seed: int = 0):
        self.factors, self.reg, self.bias_reg, self.iterations, self.seed = factors, reg, bias_reg, iterations, seed

    def fit(self, train: RatingData) -> ALSMF:
        started = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        self.scale = train.rating_scale
        self.n_users, self.n_items = train.n_users, train.n_items
        self.mu = float(train.rating.mean())
        self.p = rng.normal(0, 0.1, (train.n_users, self.factors))
        self.q = rng.normal(0, 0.1, (train.n_items, self.factors))
        self.bu, self.bi = np.zeros(train.n_users), np.zeros(train.n_items)
        by_user = group_rows(train.user, train.n_users)
        by_item = group_rows(train.item, train.n_items)
        for _ in range(self.iterations):
            self._sweep("user", train.user, train.item, train.rating, by_user)
            self._sweep("item", train.item, train.user, train.rating, by_item)
        self.train_seconds = time.perf_counter() - started
        return self

    def score(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Unclipped predictions (for ranking)."""
        return self.mu + self.bu[user] + self.bi[item] + np.sum(self.p[user] * self.q[item], axis=1)

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        return np.clip(self.score(user, item), *self.scale)

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None:
        own_f, own_b, other_f, other_b = self._views(side)
        own_f[entity], own_b[entity] = self._solve(other_f[other_idx], ratings - self.mu - other_b[other_idx])

    def _views(self, side: str):
        if side == "user":
            return self.p, self.bu, self.q, self.bi
        return self.q, self.bi, self.p, self.bu

    def _sweep(self, side, own_index, other_index, rating, groups) -> None:
        own_f, own_b, other_f, other_b = self._views(side)
        order, bounds = groups
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
