"""Baseline hyperparameters chosen on validation data, never on test data.

`BaselineSet(names, seed, tune=True).prepare(train)` carves a seeded validation split out of the
protocol's training ratings (splits.validation_split), fits each baseline on the rest once per
value of its `grid` (one hyperparameter per baseline: bias-only damping, ALS reg, I-AutoRec l2,
EASE lam), keeps the value with the best validation score (RMSE for rating predictors, NDCG@10
for rankers such as EASE), and returns factories of models with that value, to be fitted on the
whole training data by the protocol. With tune=False the built-in defaults are used, except for
rankers, which are always tuned. Every choice is recorded for the protocol's JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from stream_app.baselines import CLASSES, make_baseline, ranks_only
from stream_app.data.dataset import RatingData, Split
from stream_app.evaluation.metrics import rating_metrics
from stream_app.evaluation.splits import VALIDATION_FRACTION, validation_split

TOPN_AT = 10  # rankers are tuned on NDCG@10 of the validation ratings


@dataclass
class Prepared:
    factories: dict[str, Callable]  # name -> fresh model with the chosen hyperparameters
    record: dict  # name -> {"source", "parameter", "chosen", "validation": {value: score}, "metric"}
    validation: Split | None = None  # (fit part, validation part) when anything was tuned
    fitted: dict = field(default_factory=dict)  # name -> the best model fitted on the fit part


@dataclass
class BaselineSet:
    """The baselines a protocol runs, and how their hyperparameters are chosen."""

    names: tuple[str, ...]
    seed: int = 0
    tune: bool = True
    fixed: dict = field(default_factory=dict)  # name -> constructor kwargs kept as given (e.g. epochs)
    fraction: float = VALIDATION_FRACTION

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        unknown = set(self.names) - set(CLASSES)
        if unknown:
            raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(CLASSES)}")

    def without_rankers(self, protocol: str) -> BaselineSet:
        """The rating predictors only; a ranker named explicitly is an error for a rating protocol."""
        rankers = [n for n in self.names if ranks_only(n)]
        if rankers:
            raise ValueError(f"{', '.join(rankers)} ranks items and predicts no stars: top-N protocol only, "
                             f"not {protocol}")
        return self

    def prepare(self, train: RatingData, log=print) -> Prepared:
        factories, record, fitted = {}, {}, {}
        tuned = [n for n in self.names if self.tune or ranks_only(n)]
        split = validation_split(train, self.fraction, self.seed) if tuned else None
        for name in self.names:
            fixed = dict(self.fixed.get(name, {}))
            if name not in tuned:
                factories[name] = _factory(name, self.seed, fixed)
                record[name] = {"source": "defaults", **_defaults(name, fixed)}
                continue
            (param, grid), = CLASSES[name].grid.items()
            scores, models = {}, {}
            for value in grid:
                model = make_baseline(name, self.seed, **{**fixed, param: value}).fit(split.train)
                scores[value], models[value] = _validation_score(model, split), model
                log(f"validation: {name} {param}={value:g}: {_metric(name)} {scores[value]:.4f}")
            best = (max if ranks_only(name) else min)(grid, key=lambda v: scores[v])
            factories[name] = _factory(name, self.seed, {**fixed, param: best})
            fitted[name] = models[best]
            record[name] = {"source": "validation", "parameter": param, "chosen": best, "metric": _metric(name),
                            "validation": {f"{v:g}": scores[v] for v in grid}, "validation_split": split.name,
                            **({"fixed": fixed} if fixed else {})}
        return Prepared(factories, record, split, fitted)


def hyperparameter_source(record: dict) -> str:
    """"validation" when every baseline was tuned there, else the sources in use ("defaults", ...)."""
    sources = sorted({r["source"] for r in record.values()})
    return sources[0] if len(sources) == 1 else "+".join(sources) if sources else "none"


def describe(split: Split, record: dict, seed: int | None) -> dict:
    """What every protocol's JSON states: which split, which seed, where the hyperparameters came from."""
    return {"split": split.name, "seed": seed, "hyperparameter_source": hyperparameter_source(record),
            "hyperparameters": record}


def prepare(baselines, train: RatingData, log=print) -> Prepared:
    """A BaselineSet's choices on `train`; a plain {name: factory} dict (tests, bench) is taken as given."""
    if baselines is None:
        return Prepared({}, {})
    if isinstance(baselines, BaselineSet):
        return baselines.prepare(train, log)
    return Prepared(dict(baselines), {name: {"source": "given"} for name in baselines})


def _factory(name: str, seed: int, kwargs: dict) -> Callable:
    return lambda: make_baseline(name, seed, **kwargs)


def _defaults(name: str, fixed: dict) -> dict:
    (param, _), = CLASSES[name].grid.items()
    model = make_baseline(name, **fixed)
    return {"parameter": param, "chosen": getattr(model, param)}


def _metric(name: str) -> str:
    return f"ndcg@{TOPN_AT}" if ranks_only(name) else "rmse"


def _validation_score(model, split: Split) -> float:
    if getattr(model, "ranks_only", False):
        from stream_app.evaluation.protocols.topn import baseline_scorer, evaluate_topn

        return evaluate_topn({"m": baseline_scorer(model)}, split.train, split.test, n=TOPN_AT)["m"]["ndcg"]
    return rating_metrics(model.predict(split.test.user, split.test.item), split.test.rating)["rmse"]
