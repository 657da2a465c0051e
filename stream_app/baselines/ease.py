"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): a closed-form item-item model for
top-N ranking. With X the users x items matrix of the training ratings (binary by default: rated or
not; `implicit=False` uses the stars), P = (X^T X + lam I)^-1 and B = I - P diag(1/diag(P)), i.e.
B_ij = -P_ij / P_jj off the diagonal and 0 on it; a user's scores are x_u B.

X stays sparse; only the items x items matrices are dense. EASE ranks items and predicts no stars
(`ranks_only`), so it takes part in the top-N protocol only. `lam` is chosen on validation data
(stream_app.evaluation.tuning; `grid`)."""

from __future__ import annotations

import time

import numpy as np

from stream_app.data.dataset import RatingData


class EASE:
    name = "ease"
    ranks_only = True
    grid = {"lam": (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)}

    def __init__(self, lam: float = 500.0, implicit: bool = True):
        self.lam, self.implicit = lam, implicit

    def fit(self, train: RatingData) -> EASE:
        from scipy import sparse

        started = time.perf_counter()
        self.n_users, self.n_items = train.n_users, train.n_items
        values = np.ones(len(train)) if self.implicit else train.rating.astype(np.float64)
        x = sparse.csr_matrix((values, (train.user, train.item)), shape=(self.n_users, self.n_items))
        x.sum_duplicates()
        if self.implicit:
            x.data[:] = 1.0
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.lam
        p = np.linalg.inv(gram)
        self.b = p / -np.diag(p)
        self.b[np.diag_indices_from(self.b)] = 0.0
        self.x = x
        self._folded: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.train_seconds = time.perf_counter() - started
        return self

    def user_scores(self, user: int) -> np.ndarray:
        """Scores of every item for one user: x_u B."""
        if user in self._folded:
            items, values = self._folded[user]
            return values @ self.b[items]
        row = self.x[user]
        return row.data @ self.b[row.indices]

    def score(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        user, item = np.asarray(user), np.asarray(item)
        users, inverse = np.unique(user, return_inverse=True)
        scores = np.stack([self.user_scores(int(u)) for u in users]) if len(users) else np.zeros((0, self.n_items))
        return scores[inverse, item]

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Ranking scores, not stars (EASE predicts no ratings)."""
        return self.score(user, item)

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None:
        """A new user is its row of X; a new item would change B (a refit), so it is not supported."""
        if side != "user":
            raise NotImplementedError("EASE cannot fold in an item without refitting B")
        values = np.ones(len(other_idx)) if self.implicit else np.asarray(ratings, np.float64)
        self._folded[int(entity)] = (np.asarray(other_idx, np.int64), values)
