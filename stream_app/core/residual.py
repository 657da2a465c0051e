"""The closed-form residual factor (ModelConfig.residual_rank): what the network leaves unexplained, as a
low-rank product beside the encoded vectors.

An ID vector is [code, bias, factor]; the predicted star (on [-1, 1]) gains factor_user . factor_item. The
factors are never trained by gradient: after training, alternating ridge solves (ALS) fit them to the
network's residuals on the training ratings; at serving an entity's factor is one ridge solve of its
ratings' residuals against the other side's frozen factors (inference.FrozenNetworks.fold_factors), the same
solve ALS makes, so a folded-in entity gets what training would have given it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from stream_app.core.foldin import Recommender
    from stream_app.data.dataset import RatingData

REGS = (4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 16.0, 20.0, 24.0)  # penalties tried on the validation ratings
SWEEPS = 8  # ALS sweeps (user solve + item solve)
BLOCK_ENTITIES = 4096  # entities solved at once (their Gram matrices: 4096 x 32 x 32 doubles: 32 MB)


def ridge_by_owner(owner: np.ndarray, x: np.ndarray, y: np.ndarray, n: int, reg: float) -> np.ndarray:
    """[n, r]: for each owner o, argmin_w |x_o w - y_o|^2 + reg |w|^2 over its rows (owner sorted ascending);
    zeros for owners without rows."""
    r = x.shape[1]
    bounds = np.searchsorted(owner, np.arange(n + 1))
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    gram = np.zeros((n, r, r))
    rhs = np.zeros((n, r))
    for o in np.flatnonzero(np.diff(bounds)).tolist():  # a BLAS product per owner: no [rows, r, r] temporaries
        xs = x[bounds[o]:bounds[o + 1]]
        gram[o] = xs.T @ xs
        rhs[o] = y[bounds[o]:bounds[o + 1]] @ xs
    gram[:, np.arange(r), np.arange(r)] += reg
    return np.linalg.solve(gram, rhs[..., None])[..., 0].astype(np.float32)


def network_residuals(rec: Recommender, data: RatingData, batch: int = 65536) -> np.ndarray:
    """Scaled star minus the network's raw star output (factors left out) for every rating of `data`."""
    at = rec.net.factor_at
    out = np.empty(len(data), np.float32)
    for s in range(0, len(data), batch):
        u, i = data.user[s:s + batch], data.item[s:s + batch]
        user_vec = rec.vectors["user"][u].copy()
        user_vec[:, at:] = 0.0  # one side's factor zero: the product term vanishes
        raw = rec.net.predictor(user_vec, rec.features["user"][u], rec.vectors["item"][i], rec.features["item"][i],
                                rec.schema.encode_context(data.ts[s:s + batch]).astype(np.float32))
        out[s:s + batch] = rec.schema.encode_rates(data.rating[s:s + batch])[:, 0] - raw[:, 0]
    return out


class _Problem(NamedTuple):
    """One side's ratings sorted by that side's entity: its entities, the other side's, and the residuals."""

    own: np.ndarray
    other: np.ndarray
    residual: np.ndarray


def _problems(rec: Recommender, data: RatingData) -> dict[str, _Problem]:
    """The network's residuals over `data`, sorted once per side (they do not change while ALS runs)."""
    residual = network_residuals(rec, data)
    out = {}
    for side, own, other in (("user", data.user, data.item), ("item", data.item, data.user)):
        order = np.argsort(own, kind="stable")
        out[side] = _Problem(own[order], other[order], residual[order])
    return out


def fit_residual(rec: Recommender, data: RatingData, reg: float, sweeps: int = SWEEPS, seed: int = 0) -> None:
    """ALS of the factor parts of rec.vectors on the network's residuals over `data`, in place. The user solve
    comes last, so every user's factor is exactly its serving fold-in against the final item factors."""
    _als(rec, _problems(rec, data), reg, sweeps, seed)


def _als(rec: Recommender, problems: dict[str, _Problem], reg: float, sweeps: int, seed: int) -> None:
    at, rank = rec.net.factor_at, rec.config.residual_rank
    rng = np.random.default_rng(seed)
    rec.vectors["item"][:, at:] = rng.normal(0.0, 0.1, (len(rec.vectors["item"]), rank))
    for _ in range(sweeps):
        _solve_side(rec, "user", problems["user"], reg)
        _solve_side(rec, "item", problems["item"], reg)
    _solve_side(rec, "user", problems["user"], reg)


def _solve_side(rec: Recommender, side: str, problem: _Problem, reg: float) -> None:
    at = rec.net.factor_at
    other_factors = rec.vectors["item" if side == "user" else "user"][:, at:]
    n = len(rec.vectors[side])
    bounds = np.searchsorted(problem.own, np.arange(0, n + BLOCK_ENTITIES, BLOCK_ENTITIES).clip(max=n))
    for b, start in enumerate(range(0, n, BLOCK_ENTITIES)):
        lo, hi = bounds[b], bounds[b + 1]
        size = min(BLOCK_ENTITIES, n - start)
        rec.vectors[side][start:start + size, at:] = ridge_by_owner(
            problem.own[lo:hi] - start, other_factors[problem.other[lo:hi]], problem.residual[lo:hi], size, reg)


def choose_residual(rec: Recommender, train: RatingData, valid: RatingData, report: dict | None = None,
                    regs=REGS) -> None:
    """residual_reg from `regs` by validation RMSE (factors fitted on `train`), written into the config;
    rec keeps the factors of the chosen penalty."""
    from stream_app.core.bulk import rmse_of

    problems = _problems(rec, train)  # the [code, bias] parts, hence the residuals, are the same for every penalty
    scores, kept = {}, None
    for reg in regs:
        _als(rec, problems, reg, SWEEPS, rec.config.seed)
        scores[reg] = rmse_of(rec, valid)
        if kept is None or scores[reg] < scores[kept[0]]:
            kept = (reg, {s: rec.vectors[s].copy() for s in rec.vectors})
    rec.config.residual_reg, rec.vectors = kept[0], kept[1]
    if report is not None:
        report["residual_reg"] = {"source": "validation", "chosen": kept[0],
                                  "validation_rmse": {f"{r:g}": v for r, v in scores.items()}}
