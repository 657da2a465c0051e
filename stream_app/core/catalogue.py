"""A growable id -> (vector, side data, rating count) table: the live entities a server scores and folds against."""

from __future__ import annotations

import numpy as np

CHANGE_LOG = 4096  # upserts remembered for derived()'s row updates (more behind: recomputed in full)


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
        self._changes: list[int] = []  # the row each of the last versions changed (at most CHANGE_LOG)

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
        """compute(vectors, features, counts) of every row (an array, or a tuple of arrays, one row per entity,
        each row a function of its own entity alone), kept up to date: after a few upserts only their rows
        are computed again (e.g. the predictor's item part, the candidate basis)."""
        hit = self._derived.get(key)
        if hit is not None and hit[0] == self.version:
            return hit[1]
        behind = self.version - hit[0] if hit is not None else None
        n = len(self._ids)
        if behind is None or behind > len(self._changes) or behind > n // 8 or _rows(hit[1]) != n:
            value = compute(self.vectors, self.features, self.counts)
        else:  # same rows as before, a few of them changed
            rows = np.unique(np.asarray(self._changes[len(self._changes) - behind:], np.int64))
            value = hit[1]
            fresh = compute(self.vectors[rows], self.features[rows], self.counts[rows])
            for old, new in zip(_parts(value), _parts(fresh), strict=True):
                old[rows] = new
        self._derived[key] = (self.version, value)
        return value

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
        self._changes.append(row)
        if len(self._changes) > 2 * CHANGE_LOG:
            del self._changes[:-CHANGE_LOG]
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


def _parts(value) -> tuple[np.ndarray, ...]:
    return value if isinstance(value, tuple) else (value,)


def _rows(value) -> int:
    return len(_parts(value)[0])
