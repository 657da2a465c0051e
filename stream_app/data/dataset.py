"""The in-memory rating data every loader returns: dense indices, id maps, raw side data."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

NO_TIME = -1  # the ts of every rating of an untimed dataset (RatingData.timed False)


@dataclass
class RatingData:
    """Ratings with users and items remapped to dense indices 0..n-1.

    `user_ids[u]` / `item_ids[i]` give the original id (as a string) of dense index u / i.
    `users[u]` / `items[i]` are raw side-data dicts in the MovieLens vocabulary
    (users: gender "M"/"F", age in years, occupation name; items: title, year, genres list);
    an empty dict means "no side data". Ratings are parallel arrays, one row per rating.
    """

    name: str
    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    rating: np.ndarray  # float32 [n], stars
    ts: np.ndarray  # int64 [n], epoch seconds (NO_TIME in untimed data)
    user_ids: list[str]
    item_ids: list[str]
    users: list[dict] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    rating_scale: tuple[float, float] = (1.0, 5.0)
    extras: dict = field(default_factory=dict)  # e.g. planted factors of synthetic data
    timed: bool = True  # False: no timestamps (ts = NO_TIME): no rating context, no time-ordered protocols

    def __post_init__(self) -> None:
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        self.rating = np.asarray(self.rating, dtype=np.float32)
        self.ts = np.asarray(self.ts, dtype=np.int64)
        n = len(self.user)
        if not (len(self.item) == len(self.rating) == len(self.ts) == n):
            raise ValueError("user, item, rating and ts must have the same length")
        if not self.users:
            self.users = [{} for _ in self.user_ids]
        if not self.items:
            self.items = [{} for _ in self.item_ids]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, index: np.ndarray, name: str | None = None) -> RatingData:
        """The same users, items and id maps with only the ratings at `index` (bool mask or ints)."""
        return replace(
            self,
            name=name or self.name,
            user=self.user[index],
            item=self.item[index],
            rating=self.rating[index],
            ts=self.ts[index],
        )

    def time_order(self) -> np.ndarray:
        """Indices of the ratings sorted by time (stable, ties keep file order)."""
        return np.argsort(self.ts, kind="stable")

    def require_time(self, what: str) -> None:
        """Refuse a time-ordered use (`what`) of untimed data, with a clear message."""
        if not self.timed:
            from stream_app.errors import RecsysError

            raise RecsysError(f"{self.name} has no timestamps, so {what} cannot run on it; "
                              "use the warm or topn protocol, or a dataset with timestamps (e.g. ml-1m, ml-100k)")

    def user_index(self) -> dict[str, int]:
        return {raw: u for u, raw in enumerate(self.user_ids)}

    def item_index(self) -> dict[str, int]:
        return {raw: i for i, raw in enumerate(self.item_ids)}


def group_rows(index: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR grouping of rows by an entity index in 0..n-1: (order, bounds), where the rows of entity e
    are order[bounds[e]:bounds[e + 1]] (in their original order). The one implementation of it."""
    order = np.argsort(index, kind="stable")
    return order, np.searchsorted(index[order], np.arange(n + 1))


@dataclass
class Split:
    """A train/test split of one RatingData (both share its id maps and side data)."""

    train: RatingData
    test: RatingData
    name: str = ""


def random_split(data: RatingData, test_fraction: float = 0.1, seed: int = 0) -> Split:
    """Random rating-level split with a fixed seed (the ML-1M 90/10 protocol)."""
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(data)) < test_fraction
    return Split(data.subset(~is_test), data.subset(is_test), name=f"random{int(test_fraction * 100)}-s{seed}")
