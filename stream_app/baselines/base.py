"""The small interface every baseline implements, so a new baseline is one file.

A baseline is fitted on a RatingData's training ratings and then answers on dense indices:
`predict` (stars clipped to the rating scale), `score` (unclipped, for ranking) and, for the
fold-in and prequential protocols, `fold_in(side, entity, other_idx, ratings)`, which absorbs one
new (or updated) user or item from its ratings without touching any other parameter.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from stream_app.data.dataset import RatingData


@runtime_checkable
class Baseline(Protocol):
    name: str  # fitted models also carry n_users, n_items and train_seconds

    def fit(self, train: RatingData) -> Baseline: ...

    def predict(self, user: np.ndarray, item: np.ndarray) -> np.ndarray: ...

    def score(self, user: np.ndarray, item: np.ndarray) -> np.ndarray: ...

    def fold_in(self, side: str, entity: int, other_idx: np.ndarray, ratings: np.ndarray) -> None: ...
