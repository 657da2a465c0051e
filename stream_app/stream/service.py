"""The serving logic of the stream, without Kafka: bootstrap, batched fold-in, recommendations.

`FoldInService` wraps a frozen `Recommender` and a live item `Catalogue` (every item the worker can
recommend, with its current vector and encoded side data). Entity state lives in typed rows (see
state.py) that the Faust app keeps in its tables; this class reads them and computes vectors:

- `bootstrap_state(side, id)`: the state of an id known to the artifact that is not in the table yet:
  its last `window` training ratings (by time) and its trained vector, so its first streamed rating
  adds to its history instead of replacing it.
- `fold_in_users(states)` / `fold_in_items(states)`: ONE `Recommender.fold_in` call per side for a
  whole batch of entities; an empty window gives the cold-start vector from side data.
- `recommend_many(queries)`: top-N over the catalogue, excluding items the user rated (window and
  training history), scored in as few predictor calls as memory allows, ranked by
  `Recommender.rank_scores` (predicted stars plus a popularity term from the catalogue's counts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stream_app.core import candidates as cs
from stream_app.core.candidates import probe_rows
from stream_app.core.catalogue import Catalogue
from stream_app.core.foldin import Recommender
from stream_app.stream.state import (
    EntityState,
    Side,
    Sparse,
    WindowEntry,
    new_state,
    rated_ids,
    set_vector,
    to_dense,
    to_sparse,
)

ROWS_PER_PREDICT = 32_768  # (user, item) pairs scored per predictor call (each a hidden-size row)


@dataclass
class Query:
    """One top-N question: a user (state None = nothing stored for it yet), n, and the scoring time."""

    user_id: str
    state: EntityState | None
    n: int
    ts: float


class FoldInService:
    def __init__(self, recommender: Recommender, window_user: int = 64, window_item: int = 64,
                 two_stage: cs.TwoStage | None = None):
        self.rec = recommender
        self.two_stage = two_stage or cs.TwoStage()
        self.schema = recommender.schema
        self.model_version = recommender.model_version
        self.window = {"user": int(window_user), "item": int(window_item)}
        self.catalogue = Catalogue(recommender.ids["item"], recommender.vectors["item"],
                                   recommender.features["item"], recommender.item_counts)
        self._empty_features = {"user": self.schema.encode_user({}), "item": self.schema.encode_item({})}
        self._empty_cold = {side: recommender.cold_vector(side, {}) for side in ("user", "item")}
        self._history_groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._sparse_users: list[Sparse] | None = None

    @classmethod
    def from_settings(cls, recommender: Recommender, settings) -> FoldInService:
        return cls(recommender, settings.window_user, settings.window_item,
                   cs.TwoStage(exact_max=settings.topn_exact_items, candidates=settings.topn_candidates))

    @property
    def n_dim(self) -> int:
        return self.rec.n_dim

    # ---------------------------------------------------------------------------------------- state

    def is_known(self, side: str, entity_id: str) -> bool:
        return entity_id in self.rec.index[side]

    def bootstrap_state(self, side: Side, entity_id: str) -> EntityState | None:
        """Initial state of an id known to the artifact (None for an id it does not know)."""
        index = self.rec.index[side].get(entity_id)
        if index is None:
            return None
        h = self.rec.history
        state = new_state()
        rows = self._history_rows(side, index) if h is not None else np.array([], dtype=np.int64)
        last = rows[-self.window[side]:] if len(rows) else rows
        rates = self.schema.encode_rates(h.rating[last]) if len(last) else np.zeros((0, 2), np.float32)
        others = (h.item if side == "user" else h.user)[last].tolist() if len(last) else []
        stars, thumbs = (np.where(np.isnan(rates), None, rates).T.tolist() if len(last) else ([], []))
        ts = h.ts[last].tolist() if len(last) else []
        ids = self.rec.ids["item" if side == "user" else "user"]
        if side == "user":
            state.window = [WindowEntry(ids[o], s, t, when) for o, s, t, when in zip(others, stars, thumbs, ts,
                                                                                      strict=True)]
        else:
            vecs = np.asarray(self.rec.vectors["user"][others], np.float32)
            sparse_users = self._sparse_user_table()
            state.window = [WindowEntry(ids[o], s, t, when, vecs[j], sparse_users[o])
                            for j, (o, s, t, when) in enumerate(zip(others, stars, thumbs, ts, strict=True))]
        state.n_ratings = int(len(rows))
        set_vector(state, self.rec.vectors[side][index], self.model_version)
        return state

    def initial_state(self, side: Side, entity_id: str) -> EntityState:
        """The bootstrapped state of a known id, or a fresh one."""
        return self.bootstrap_state(side, entity_id) or new_state()

    def _history_rows(self, side: str, index: int) -> np.ndarray:
        """Training-history rows of one entity, in time order."""
        if side not in self._history_groups:
            h = self.rec.history
            entity = h.user if side == "user" else h.item
            order = np.lexsort((h.ts, entity))
            bounds = np.searchsorted(entity[order], np.arange(len(self.rec.ids[side]) + 1))
            self._history_groups[side] = (order, bounds)
        order, bounds = self._history_groups[side]
        return order[bounds[index]:bounds[index + 1]]

    def features(self, side: Side, entity_id: str, state: EntityState | None) -> np.ndarray:
        """Encoded side data: from the state's side data if any, else the trained (or catalogue) row."""
        if state is not None and state.side:
            encode = self.schema.encode_user if side == "user" else self.schema.encode_item
            return encode(state.side)
        if side == "item":
            row = self.catalogue.index_of(entity_id)
            return self.catalogue.features[row] if row is not None else self._empty_features["item"]
        index = self.rec.index["user"].get(entity_id)
        return self.rec.features["user"][index] if index is not None else self._empty_features["user"]

    # ---------------------------------------------------------------------------------------- fold-in

    def fold_in_users(self, states: dict[str, EntityState]) -> dict[str, np.ndarray]:
        """New vectors of users from their windows (item vectors/features read from the catalogue now)."""
        ids = list(states)
        if not ids:
            return {}
        windows = [states[uid].window for uid in ids]
        index_of = self.catalogue.index_of
        rows = np.fromiter((-1 if (r := index_of(e.other_id)) is None else r for win in windows for e in win),
                           dtype=np.int64)
        if len(self.catalogue):
            vecs, feats = self.catalogue.vectors[rows], self.catalogue.features[rows]
        else:
            vecs = np.zeros((len(rows), self.n_dim), np.float32)
            feats = np.zeros((len(rows), self.schema.item_dim), np.float32)
        unknown = rows < 0  # rated before the item side has seen it: its cold-start vector
        if unknown.any():
            vecs[unknown], feats[unknown] = self._empty_cold["item"], self._empty_features["item"]
        side_data = np.stack([self.features("user", uid, states[uid]) for uid in ids])
        out = self.rec.fold_in("user", self._record_sets("user", windows, vecs, feats), side_data, entity_keys=ids)
        return dict(zip(ids, out, strict=True))

    def fold_in_items(self, states: dict[str, EntityState], update_catalogue: bool = True) -> dict[str, np.ndarray]:
        """New vectors of items from their windows (each entry carries the rater's vector and features);
        the catalogue gets the new vectors and side data (new items are added)."""
        ids = list(states)
        if not ids:
            return {}
        windows = [states[iid].window for iid in ids]
        entries = [e for win in windows for e in win]
        vecs = (np.stack([e.vector for e in entries]).astype(np.float32, copy=False) if entries
                else np.zeros((0, self.n_dim), np.float32))
        feats = to_dense([e.features for e in entries], self.schema.user_dim)
        side_data = [self.features("item", iid, states[iid]) for iid in ids]
        out = self.rec.fold_in("item", self._record_sets("item", windows, vecs, feats), np.stack(side_data),
                               entity_keys=ids)
        if update_catalogue:
            for iid, vector, f in zip(ids, out, side_data, strict=True):
                self.catalogue.upsert(iid, vector, f, states[iid].n_ratings)
        return dict(zip(ids, out, strict=True))

    def _record_sets(self, side: Side, windows: list[list[WindowEntry]], vecs: np.ndarray,
                     feats: np.ndarray) -> list[np.ndarray]:
        """Records of every window in one records() call, split back per entity (an empty window: no records,
        fold_in gives its cold-start vector)."""
        counts = [len(win) for win in windows]
        if not sum(counts):
            width = self.n_dim + feats.shape[1] + self.schema.context_dim + self.schema.rates_dim
            return [np.zeros((0, width), np.float32) for _ in windows]
        ts = np.fromiter((e.ts for win in windows for e in win), dtype=np.float64)
        stars = np.array([e.stars for win in windows for e in win], dtype=np.float64)  # None -> NaN
        thumbs = np.array([e.thumbs for win in windows for e in win], dtype=np.float64)
        rates = np.stack([stars, thumbs], axis=1).astype(np.float32)
        records = self.rec.records(side, vecs, feats, ts, rates)
        return np.split(records, np.cumsum(counts)[:-1])

    def fold_in(self, side: Side, states: dict[str, EntityState]) -> dict[str, np.ndarray]:
        return self.fold_in_users(states) if side == "user" else self.fold_in_items(states)

    def rater_features(self, user_id: str, user_state: EntityState | None) -> Sparse:
        """What an item window entry keeps of its rater's side data (sparse)."""
        if user_state is None or not user_state.side:
            index = self.rec.index["user"].get(user_id)
            if index is not None:
                return self._sparse_user(index)
        return to_sparse(self.features("user", user_id, user_state))

    def _sparse_user(self, index: int) -> Sparse:
        """to_sparse() of an artifact user's trained side data (fixed, immutable)."""
        return self._sparse_user_table()[index]

    def _sparse_user_table(self) -> list[Sparse]:
        """to_sparse() of every artifact user's trained side data, computed once (in one pass)."""
        if self._sparse_users is None:
            features = self.rec.features["user"]
            rows, cols = np.nonzero(features)
            values = np.round(features[rows, cols].astype(np.float64), 6).tolist()
            table: list[list] = [[] for _ in range(len(features))]
            for r, c, v in zip(rows.tolist(), cols.tolist(), values, strict=True):
                table[r].append((c, v))
            self._sparse_users = [tuple(pairs) for pairs in table]
        return self._sparse_users

    # ---------------------------------------------------------------------------------------- top-N

    def user_vector(self, user_id: str, state: EntityState | None) -> np.ndarray:
        if state is not None and state.vector is not None:
            return np.asarray(state.vector, np.float32)
        index = self.rec.index["user"].get(user_id)
        if index is not None:
            return self.rec.vectors["user"][index]
        return self.rec.cold_vector("user", state.side if state is not None else {})

    def excluded_rows(self, user_id: str, state: EntityState | None) -> set[int]:
        """Catalogue rows the user has rated: its window, plus its training history if the artifact knows it."""
        rows = set()
        if state is not None:
            rows = {r for r in map(self.catalogue.index_of, rated_ids(state)) if r is not None}
        index = self.rec.index["user"].get(user_id)
        if index is not None:  # catalogue rows of the artifact's items are the model's item indices
            rows.update(int(i) for i in self.rec.rated_items(index))
        return rows

    def recommend(self, user_id: str, state: EntityState | None, n: int, ts: float | None = None
                  ) -> list[tuple[str, float]]:
        return self.recommend_many([Query(user_id, state, n, _now() if ts is None else ts)])[0]

    def recommend_many(self, queries: list[Query]) -> list[list[tuple[str, float]]]:
        """Top-n (item id, predicted stars) per query, best first, over the whole catalogue."""
        results: list[list[tuple[str, float]]] = []
        n_items = len(self.catalogue)
        if n_items == 0 or not queries:
            return [[] for _ in queries]
        if self.two_stage.applies(n_items):
            return self._recommend_two_stage(queries)
        ids = self.catalogue.ids
        items = self._item_part()
        per_call = max(1, ROWS_PER_PREDICT // n_items)
        for start in range(0, len(queries), per_call):
            part = queries[start:start + per_call]
            uv = np.stack([self.user_vector(q.user_id, q.state) for q in part])
            ud = np.stack([self.features("user", q.user_id, q.state) for q in part])
            scores = self.rec.score_items(items, uv, ud, np.asarray([q.ts for q in part], np.float64))
            counts = self.catalogue.counts
            for q, row in zip(part, scores, strict=True):
                top = self.rec.top_n(row, counts, int(q.n), self.excluded_rows(q.user_id, q.state))
                results.append([(ids[i], stars) for i, stars in top])
        return results

    def _item_part(self) -> tuple[np.ndarray, np.ndarray]:
        """Recommender.item_part of the whole catalogue, kept up to date row by row."""
        return self.catalogue.derived("predictor_items", lambda v, f, _: self.rec.item_part(v, f))

    def _recommend_two_stage(self, queries: list[Query]) -> list[list[tuple[str, float]]]:
        """Top-n over a large catalogue: candidates by a dot-product score, exact scores for them only
        (core/candidates.py)."""
        cat, rec, plan = self.catalogue, self.rec, self.two_stage
        counts, ids = cat.counts, cat.ids
        prior = cat.derived("popularity_prior", lambda v, f, counts: rec.rank_scores(np.zeros(len(v), np.float32),
                                                                                     counts).astype(np.float32))
        probes = probe_rows(len(cat), plan.probes, plan.seed)
        uv = np.stack([self.user_vector(q.user_id, q.state) for q in queries])
        ud = np.stack([self.features("user", q.user_id, q.state) for q in queries])
        ts = np.asarray([q.ts for q in queries], np.float64)
        items = self._item_part()
        basis = cat.derived("candidate_basis", lambda v, f, _: cs.basis(v, f))
        weights = cs.fit_weights(basis[probes], rec.score_items((items[0][probes], items[1][probes]), uv, ud, ts))
        exclude = [np.fromiter(self.excluded_rows(q.user_id, q.state), np.int64) for q in queries]
        k = max(plan.candidates, max(int(q.n) for q in queries))
        rows = cs.candidate_rows(basis.T, weights, prior, k, exclude)
        # every user's candidates scored at once over (user, candidate) pairs
        flat = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(queries)), [len(r) for r in rows])
        stars = rec.score_pairs(items, flat, owner, uv, ud, ts) if len(flat) else np.zeros(0, np.float32)
        results, start = [], 0
        for q, cand in zip(queries, rows, strict=True):
            mine, start = stars[start:start + len(cand)], start + len(cand)
            results.append([(ids[cand[i]], s) for i, s in rec.top_n(mine, counts[cand], int(q.n))] if len(cand)
                           else [])
        return results

    def rank_scores(self, top: list[tuple[str, float]]) -> list[float]:
        """What a top-N list from recommend_many is ranked by, per entry: Recommender.rank_scores of the
        predicted stars with the catalogue's rating counts."""
        if not top:
            return []
        counts = self.catalogue.counts[[self.catalogue.index_of(i) for i, _ in top]]
        return [float(x) for x in self.rec.rank_scores(np.array([s for _, s in top], np.float64), counts)]


def _now() -> float:
    import time

    return time.time()
