"""Two-stage top-N for large catalogues: a dot-product candidate score over every item, then the full
predictor on the candidates only.

The predictor is an MLP over (user, item) pairs, so scoring every item costs a hidden-size product per item
and grows linearly with the catalogue. For one user its predicted stars are, to a good approximation, a linear
function of the item's vector and side data (the item bias enters the output additively, the rest through
the first layer). The candidate stage fits that linear function per user: the predictor scores a fixed
sample of `probes` catalogue items, a ridge regression on their [vector, side data, 1] rows gives the user's
candidate weights `w`, and `basis @ w` scores every item: one dot product per item. The `candidates` best
by that score (plus the same popularity term the ranking uses) are scored with the full predictor and
ranked exactly. Catalogues of at most `exact_max` items are scored exactly (cheap there, and no
approximation). bench/stream.py reports recall@10 of the two-stage lists against exact scoring.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

RIDGE = 1e-3


@dataclass(frozen=True)
class TwoStage:
    """Sizes of the two-stage top-N (see the module docstring)."""

    exact_max: int = 2000  # catalogues of at most this many items are scored exactly
    probes: int = 128  # items the predictor scores to fit a user's candidate weights
    candidates: int = 128  # items re-ranked with the full predictor (at least n)
    seed: int = 0

    def applies(self, n_items: int) -> bool:
        return n_items > self.exact_max


def basis(vectors: np.ndarray, features: np.ndarray) -> np.ndarray:
    """[n_items, d] rows the candidate score is linear in: vector, side data, 1."""
    return np.hstack([vectors, features, np.ones((len(vectors), 1), np.float32)]).astype(np.float32)


@functools.lru_cache(maxsize=8)
def probe_rows(n_items: int, probes: int, seed: int = 0) -> np.ndarray:
    """A fixed sample of catalogue rows (the same for a catalogue size; read-only)."""
    rng = np.random.default_rng(seed + n_items)
    rows = np.sort(rng.choice(n_items, min(probes, n_items), replace=False))
    rows.setflags(write=False)
    return rows


def fit_weights(probe_basis: np.ndarray, probe_scores: np.ndarray) -> np.ndarray:
    """[B, d] ridge weights w with probe_basis @ w[b] ~ probe_scores[b] (probe_scores: [B, probes])."""
    x = probe_basis.astype(np.float64)
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += RIDGE * max(float(np.trace(gram)) / len(gram), 1e-9)
    return np.linalg.solve(gram, x.T @ probe_scores.T.astype(np.float64)).T.astype(np.float32)


def candidate_rows(columns: np.ndarray, weights: np.ndarray, prior: np.ndarray, k: int,
                   exclude: list[np.ndarray]) -> list[np.ndarray]:
    """Per user, the k rows with the best candidate score (basis @ w + prior), skipping its excluded rows;
    columns: basis() of every item, transposed ([d, n_items])."""
    scores = np.ascontiguousarray(weights) @ columns  # [B, n_items]
    scores += prior
    n_items, out = columns.shape[1], []
    for b in range(weights.shape[0]):
        s = scores[b]
        excluded = np.unique(exclude[b])
        s[excluded] = -np.inf
        kk = min(k, n_items - len(excluded))
        out.append(np.argpartition(s, n_items - kk)[n_items - kk:] if kk > 0 else np.array([], dtype=np.int64))
    return out


def recall_at(n: int, approx: list[list], exact: list[list]) -> float:
    """Mean share of each exact top-n list found in the approximate one."""
    shares = [len({i for i, _ in a[:n]} & {i for i, _ in e[:n]}) / max(min(n, len(e)), 1)
              for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(shares)) if shares else 1.0
