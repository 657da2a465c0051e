"""Freezing: after the last training round, every served vector and serving constant is computed exactly as
serving computes it (numpy, core/inference.py), so trained and served vectors agree.

1. `frozen_recommender`: the trained networks (eval mode, on the CPU) with the training tables as vectors.
2. `fold_in_all`: every vector folded in from all its ratings, unshrunk; the cold-start regressions fitted
   to those vectors (`fit_cold_start`); then every vector shrunk toward its cold-start vector by the fold-in
   prior, chosen on the validation ratings when they are given.
3. With a residual factor (core/residual.py): ALS on the network's residuals, its penalty chosen on validation.
4. `freeze`: steps 1-3 on the training part (choosing constants on validation), then once more on all the
   ratings, the held-out validation ones included (folded in, never trained on).
"""

from __future__ import annotations

import numpy as np

from stream_app.core.bulk import fold_in_dataset, rmse_of
from stream_app.core.foldin import SIDES, History, Recommender
from stream_app.core.residual import choose_residual, fit_residual
from stream_app.data.dataset import RatingData

FOLDIN_PRIORS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0)  # fold-in priors tried on validation ratings


def frozen_recommender(model, schema, data: RatingData, td, tables: dict) -> Recommender:
    """A recommender of the torch `model` (moved to the CPU, eval mode) with `tables` (TrainingData's ID
    tables) as its vectors."""
    model.eval()
    pad = model.config.residual_rank  # the residual factors start at zero (fitted after fold-in)
    vectors = {s: np.pad(td.vectors(s, t).cpu().numpy(), ((0, 0), (0, pad))) for s, t in tables.items()}
    return Recommender(model.cpu(), schema, data.user_ids, data.item_ids, vectors["user"], vectors["item"],
                       td.features["user"].cpu().numpy(), td.features["item"].cpu().numpy(), seed=model.config.seed)


def freeze(rec: Recommender, data: RatingData, train_part: RatingData, valid_part: RatingData | None,
           report: dict, log, calibrate=None) -> Recommender:
    """Step 4 of the module docstring. calibrate(rec, train_part, valid_part) sets further serving constants on
    the validation ratings (Trainer.fit); what it returns goes into `report`."""
    has_valid = valid_part is not None and len(valid_part) > 0
    choose = has_valid and rec.config.choose_on_validation
    fold_in_all(rec, train_part, valid_part if choose else None, report)
    if rec.config.residual_rank:
        if choose:
            choose_residual(rec, train_part, valid_part, report)
        else:
            fit_residual(rec, train_part, rec.config.residual_reg, seed=rec.config.seed)
    if has_valid:
        rmse = rmse_of(rec, valid_part)
        report["valid_rmse_frozen"] = rmse
        log(f"validation rmse with frozen fold-in vectors: {rmse:.4f}"
            + (f" (fold-in prior {rec.config.foldin_prior:g}, chosen on it)" if choose else ""))
        if choose and calibrate is not None:
            report.update(calibrate(rec, train_part, valid_part))
    fold_in_all(rec, data)  # absorb the held-out validation ratings too (no training)
    if rec.config.residual_rank:
        fit_residual(rec, data, rec.config.residual_reg, seed=rec.config.seed)
    rec.history = History(data.user, data.item, data.rating, data.ts)
    return rec


def fold_in_all(rec: Recommender, data: RatingData, valid: RatingData | None = None,
                report: dict | None = None) -> None:
    """Step 2 of the module docstring; with `valid`, the prior is chosen from FOLDIN_PRIORS by validation RMSE
    (cheap: the shrinkage is closed form) and written into the config."""
    counts, raw, cold = {}, {}, {}
    for side in SIDES:
        rec.vectors[side], counts[side] = fold_in_dataset(rec, data, side, prior=0.0)
    for side in SIDES:
        has = counts[side] > 0
        if has.any():
            fit_cold_start(rec, side, rec.features[side][has], rec.vectors[side][has])
        raw[side], cold[side] = rec.vectors[side], rec.cold_vectors(side, rec.features[side])

    def shrink(prior: float) -> None:
        for side in SIDES:
            rec.vectors[side] = rec.net.shrink_to_cold(raw[side], cold[side], counts[side], prior)

    if valid is not None:
        scores = {}
        for prior in FOLDIN_PRIORS:
            shrink(prior)
            scores[prior] = rmse_of(rec, valid)
        rec.config.foldin_prior = min(scores, key=scores.get)
        if report is not None:
            report["foldin_prior"] = {"source": "validation", "chosen": rec.config.foldin_prior,
                                      "validation_rmse": {f"{c:g}": v for c, v in scores.items()}}
    shrink(rec.config.foldin_prior)


def fit_cold_start(rec: Recommender, side: str, data: np.ndarray, vectors: np.ndarray) -> None:
    """The ridge regression side data -> vectors (intercept not shrunk), written in place into the cold-start
    weights (shared with the torch model when there is one)."""
    x = np.concatenate([data, np.ones((len(data), 1))], axis=1).astype(np.float64)
    penalty = rec.config.cold_ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0
    cold = rec.net.state[f"{side}_cold"]  # [code, bias] columns: a cold residual factor is zero
    target = vectors[:, :cold.shape[1]].astype(np.float64)
    cold[...] = np.linalg.solve(x.T @ x + penalty, x.T @ target).astype(np.float32)
