"""Prequential evaluation (METHOD.md): stream ratings in time order, predict each one before it is
used to update, report the running RMSE.

Every system starts from a model fitted on the split's training ratings; the stream is the split's
test ratings sorted by time. After each prediction the rating is absorbed without retraining:

- aevec: the user's and the item's vectors are recomputed by the frozen encoders from their
  ratings so far (training ratings + streamed ones, the last `window` if set): the serving path.
  Networks, breathing offsets and every other vector stay as they are.
- bias-only / als-mf: the user's and the item's parameters are re-solved in closed form (their
  `fold_in`) from all their ratings so far, the other side frozen.

`chunk` > 1 predicts a whole chunk before absorbing it (what a batched server does); the default
1 is the protocol proper, since a chunk hides its own earlier ratings from its later predictions.
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np

from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation.tuning import BaselineSet, describe, prepare


class _Histories:
    """Per user and per item: the other side's indices, stars and timestamps seen so far."""

    def __init__(self, train: RatingData):
        self.rows = {"user": defaultdict(list), "item": defaultdict(list)}
        for u, i, r, t in zip(train.user.tolist(), train.item.tolist(), train.rating.tolist(), train.ts.tolist(),
                              strict=True):
            self.rows["user"][u].append((i, r, t))
            self.rows["item"][i].append((u, r, t))

    def add(self, u: int, i: int, r: float, t: int) -> None:
        self.rows["user"][u].append((i, r, t))
        self.rows["item"][i].append((u, r, t))

    def arrays(self, side: str, entity: int, window: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows = self.rows[side][entity]
        if window and len(rows) > window:
            rows = sorted(rows, key=lambda x: x[2])[-window:]
        other, stars, ts = zip(*rows, strict=True)
        return np.array(other, np.int64), np.array(stars, np.float32), np.array(ts, np.int64)


class BaselineStream:
    """A fitted stream_app.baselines model; each rating re-solves its user and item (fold_in)."""

    def __init__(self, model, train: RatingData, name: str | None = None):
        self.model, self.name = model, name or model.name
        self.hist = _Histories(train)

    def predict(self, u: np.ndarray, i: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(u), np.asarray(i))

    def update(self, u: int, i: int, r: float, t: int) -> None:
        self.hist.add(u, i, r, t)
        for side, e in (("user", u), ("item", i)):
            other, stars, _ = self.hist.arrays(side, e)
            self.model.fold_in(side, e, other, stars)


class AEVecStream:
    """Our model: each rating re-folds its user and item with the frozen encoders (no training)."""

    name = "aevec"

    def __init__(self, rec, train: RatingData, window: int = 0):
        self.rec, self.window = rec, window
        self.hist = _Histories(train)
        self.vectors = {side: rec.vectors[side].copy() for side in ("user", "item")}

    def predict(self, u: np.ndarray, i: np.ndarray, ts: np.ndarray) -> np.ndarray:
        rec, v = self.rec, self.vectors
        return rec.predict_rates(v["user"][u], rec.features["user"][u], v["item"][i], rec.features["item"][i],
                                 np.asarray(ts))[:, 0]

    def update(self, u: int, i: int, r: float, t: int) -> None:
        self.hist.add(u, i, r, t)
        rec = self.rec
        for side, e in (("user", u), ("item", i)):
            other_side = "item" if side == "user" else "user"
            other, stars, ts = self.hist.arrays(side, e, self.window)
            rates = rec.schema.encode_rates(stars)
            records = rec.records(side, self.vectors[other_side][other], rec.features[other_side][other], ts, rates)
            self.vectors[side][e] = rec.fold_in(side, [records], rec.features[side][[e]],
                                                entity_keys=[rec.ids[side][e]])[0]


def run_prequential(systems: list, stream: RatingData, chunk: int = 1, points: int = 100,
                    limit: int | None = None, progress=None) -> dict:
    """Predict-then-update over `stream` in time order for every system.

    Returns {name: {"rmse", "mae", "n", "seconds", "curve": {"n": [...], "rmse": [...]}}}: the curve
    is the running (cumulative) RMSE at about `points` evenly spaced positions.
    """
    order = stream.time_order()
    if limit is not None:
        order = order[:limit]
    u, i, r, t = stream.user[order], stream.item[order], stream.rating[order].astype(np.float64), stream.ts[order]
    n = len(order)
    marks = set(np.unique(np.linspace(1, n, max(1, min(points, n))).astype(int)).tolist()) if n else set()
    out = {}
    for system in systems:
        started = time.perf_counter()
        sq, ab = np.zeros(n), np.zeros(n)
        curve_n, curve_rmse = [], []
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            pred = np.asarray(system.predict(u[s:e], i[s:e], t[s:e]), np.float64)
            sq[s:e], ab[s:e] = (pred - r[s:e]) ** 2, np.abs(pred - r[s:e])
            for j in range(s, e):
                system.update(int(u[j]), int(i[j]), float(r[j]), int(t[j]))
            for m in range(s + 1, e + 1):
                if m in marks:
                    curve_n.append(m)
                    curve_rmse.append(float(np.sqrt(sq[:m].mean())))
            if progress is not None:
                progress(system.name, e, n)
        out[system.name] = {"rmse": float(np.sqrt(sq.mean())) if n else float("nan"),
                            "mae": float(ab.mean()) if n else float("nan"), "n": int(n), "chunk": chunk,
                            "seconds": time.perf_counter() - started,
                            "curve": {"n": curve_n, "rmse": curve_rmse}}
    return out


def prequential(split: Split, rec=None, baselines=None, peers: list | None = None,
                chunk: int = 1, limit: int | None = None, window: int = 0, log=print) -> dict:
    """Predict-then-update over the test ratings in time order (see this module's top).
    baselines: a tuning.BaselineSet or {name: factory}.
    `peers`: extra stream systems (objects with name, predict(u, i, ts), update(u, i, r, ts))."""
    split.test.require_time("the prequential protocol (test ratings streamed in time order)")
    if isinstance(baselines, BaselineSet):
        baselines = baselines.without_rankers("prequential")
    prepared = prepare(baselines, split.train, log)
    systems = []
    if rec is not None:
        systems.append(AEVecStream(rec, split.train, window))
    for name, make in prepared.factories.items():
        systems.append(BaselineStream(make().fit(split.train), split.train, name))
    systems.extend(peers or [])
    n = min(len(split.test), limit) if limit else len(split.test)
    log(f"prequential: {n} test ratings in time order, chunk {chunk}, systems {[s.name for s in systems]}")
    results = run_prequential(systems, split.test, chunk=chunk, limit=limit)
    return {"protocol": "prequential", "stream": n, "chunk": chunk, "window": window, "systems": results,
            **describe(split, prepared.record, baselines.seed if isinstance(baselines, BaselineSet) else None)}
