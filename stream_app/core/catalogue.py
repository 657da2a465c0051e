"""A growable id -> (vector, side data, rating count) table: the live entities a server scores and folds against."""

from __future__ import annotations

import numpy as np


class Catalogue:
    """Vectors, encoded side data and rating counts of entities, addressable by raw id, growing in place.

    Starts from an artifact's trained tables; new ids are appended (capacity doubles, so an
    append is amortised O(1)). `vectors`, `features` and `counts` are views of the live rows.
    """

    def __init__(self, ids: list[str], vectors: np.ndarray, features: np.ndarray, counts: np.ndarray | None = None):
        self._ids = [str(i) for i in ids]
        self._index = {raw: i for i, raw in enumerate(self._ids)}
        n = len(self._ids)
        self._vectors = np.array(vectors, dtype=np.float32, copy=True).reshape(n, -1)
        self._features = np.array(features, dtype=np.float32, copy=True).reshape(n, -1)
        self._counts = np.zeros(n, np.float32) if counts is None else np.array(counts, np.float32).reshape(n)
        self.version = 0  # bumped on every change, so callers can cache derived arrays
        self._derived: dict = {}

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, raw_id: object) -> bool:
        return str(raw_id) in self._index

    @property
    def ids(self) -> list[str]:
        return self._ids

    @property
    def vectors(self) -> np.ndarray:
        return self._vectors[: len(self._ids)]

    @property
    def features(self) -> np.ndarray:
        return self._features[: len(self._ids)]

    @property
    def counts(self) -> np.ndarray:
        """Ratings each entity has had (ranking uses them: see Recommender.rank_scores)."""
        return self._counts[: len(self._ids)]

    def derived(self, key, compute):
        """compute(vectors, features), cached until the catalogue changes (e.g. the predictor's item part)."""
        hit = self._derived.get(key)
        if hit is None or hit[0] != self.version:
            hit = self._derived[key] = (self.version, compute(self.vectors, self.features))
        return hit[1]

    def index_of(self, raw_id: object) -> int | None:
        return self._index.get(str(raw_id))

    def upsert(self, raw_id: object, vector: np.ndarray | None = None, features: np.ndarray | None = None,
               count: float | None = None) -> int:
        """Set an entity's vector, side data and/or rating count; a new id is appended (zeros until set)."""
        key = str(raw_id)
        row = self._index.get(key)
        if row is None:
            row = self._append(key)
        if vector is not None:
            self._vectors[row] = vector
        if features is not None:
            self._features[row] = features
        if count is not None:
            self._counts[row] = count
        self.version += 1
        return row

    def _append(self, key: str) -> int:
        row = len(self._ids)
        if row == len(self._vectors):
            grow = max(16, row)
            self._vectors = np.concatenate([self._vectors, np.zeros((grow, self._vectors.shape[1]), np.float32)])
            self._features = np.concatenate([self._features,
                                             np.zeros((grow, self._features.shape[1]), np.float32)])
            self._counts = np.concatenate([self._counts, np.zeros(grow, np.float32)])
        self._ids.append(key)
        self._index[key] = row
        return row
