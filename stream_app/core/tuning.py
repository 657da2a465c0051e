"""Hyperparameter search on validation data only (Optuna).

Every trial trains on the training part of a split; the trainer carves its validation ratings out of
that part (ModelConfig.valid_fraction) and the objective is the validation RMSE of the frozen,
folded-in vectors, i.e. what serving would predict. Test ratings are never passed in. Bad trials are
pruned on their per-round validation RMSE; the study lives in SQLite, so a search can be resumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream_app.core.config import ModelConfig
from stream_app.data.dataset import RatingData


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter (a ModelConfig field)."""

    name: str
    kind: Literal["int", "float", "log", "choice"]
    low: float = 0.0
    high: float = 0.0
    choices: tuple = ()


# What is searched, and over which ranges (METHOD.md: N 16..64, M 5..9, K 24..64).
SEARCH_SPACE: tuple[Param, ...] = (
    Param("n_dim", "choice", choices=(16, 24, 32, 48, 64)),
    Param("m_records", "int", 5, 9),
    Param("k_samples", "choice", choices=(24, 32, 48, 64)),
    Param("hidden", "choice", choices=(48, 64, 96, 128, 192)),
    Param("phi_layers", "choice", choices=(1, 2)),
    Param("rho", "choice", choices=("mlp", "linear")),
    Param("predictor_hidden", "choice", choices=(64, 128)),
    Param("dot_head", "choice", choices=(False, True)),
    Param("lr", "log", 5e-4, 5e-3),
    Param("weight_decay", "log", 1e-6, 1e-3),
    Param("dropout", "float", 0.0, 0.3),
    Param("recon_weight", "float", 0.0, 1.0),
    Param("train_k", "int", 2, 6),
    Param("small_pool_fraction", "float", 0.0, 0.5),
    Param("bias_reg", "log", 1.0, 50.0),
    Param("foldin_prior", "float", 0.0, 8.0),
    Param("smoothing", "float", 0.2, 1.0),
)


def suggest(trial, base: ModelConfig, space: tuple[Param, ...] = SEARCH_SPACE) -> ModelConfig:
    """The trial's config: `base` with every searched field drawn by the trial."""
    values = base.to_dict()
    for p in space:
        if p.kind == "choice":
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.kind == "int":
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high))
        else:
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.kind == "log")
    return ModelConfig.from_dict(values)


class Pruned(Exception):
    """Raised from the round callback when the pruner stops a trial."""


def run_study(train: RatingData, schema, base: ModelConfig, trials: int, storage: str, study_name: str,
              device: str = "cpu", timeout: float | None = None, log=print):
    """Run (or resume) the study; returns it. `train` must not hold any test rating."""
    import optuna

    from stream_app.core.training import Trainer

    if base.valid_fraction <= 0:
        raise ValueError("tuning needs validation ratings: valid_fraction must be > 0")
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize", load_if_exists=True,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2))
    # seeded by how far the study got, so a resumed search draws new points instead of repeating its first ones
    study.sampler = optuna.samplers.TPESampler(seed=base.seed + len(study.trials))

    def objective(trial) -> float:
        config = suggest(trial, base)

        def report(stats) -> None:
            if stats.valid_rmse is not None:
                trial.report(stats.valid_rmse, stats.round)
                if trial.should_prune():
                    raise Pruned()

        try:
            _, result = Trainer(config, schema, device=device, progress=False).fit(
                train, log=lambda line: None, on_round=report)
        except Pruned:
            raise optuna.TrialPruned() from None
        value = result.get("valid_rmse_frozen", math.nan)
        log(f"trial {trial.number}: validation rmse {value:.4f}  {trial.params}")
        return value

    done = sum(t.state.is_finished() for t in study.trials)
    log(f"study {study_name!r} in {storage}: {done} trials already finished, running {trials} more")
    study.optimize(objective, n_trials=trials, timeout=timeout)
    return study


def best_config(study, base: ModelConfig) -> ModelConfig:
    """`base` with the best trial's parameters: what `recsys train --config` takes."""
    return ModelConfig.from_dict({**base.to_dict(), **study.best_trial.params})


def plot_trials(study, out: str | Path) -> Path:
    """Validation RMSE of every finished trial, pruned trials at their last report, best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED and t.intermediate_values]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.scatter([t.number for t in done], [t.value for t in done], label="complete (frozen fold-in)")
    ax.scatter([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
               marker="x", color="tab:gray", label="pruned (last round reported)")
    best, line = math.inf, []
    for t in sorted(done, key=lambda t: t.number):
        best = min(best, t.value)
        line.append((t.number, best))
    if line:
        ax.step(*zip(*line, strict=True), where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation RMSE (stars)")
    ax.set_title(f"recsys tune: {study.study_name}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
