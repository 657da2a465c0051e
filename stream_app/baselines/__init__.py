"""Baselines on the same data pipeline, each one file behind the `Baseline` interface (base.py):
bias-only (bias.py), biased MF by ALS with closed-form fold-in (als.py), I-AutoRec (autorec.py) and,
for top-N only, EASE (ease.py).

`baseline_factories(names)` gives `name -> fresh unfitted model` for the protocols, so every
protocol fits its own copies on its own training data. A new baseline: one module with a class
implementing base.Baseline (with a `grid` of the hyperparameter chosen on validation data, and
`ranks_only = True` if it predicts no stars), plus one entry in CLASSES.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from stream_app.baselines.als import ALSMF
from stream_app.baselines.autorec import IAutoRec
from stream_app.baselines.base import Baseline
from stream_app.baselines.bias import BiasOnly
from stream_app.baselines.ease import EASE

CLASSES = {"bias-only": BiasOnly, "als-mf": ALSMF, "i-autorec": IAutoRec, "ease": EASE}
BASELINES = ("bias-only", "als-mf", "i-autorec")  # rating predictors: every protocol
TOPN_BASELINES = (*BASELINES, "ease")

__all__ = ["ALSMF", "BASELINES", "CLASSES", "EASE", "TOPN_BASELINES", "Baseline", "BiasOnly", "IAutoRec",
           "baseline_factories", "make_baseline", "ranks_only"]


def make_baseline(name: str, seed: int = 0, **kwargs):
    """A fresh unfitted baseline; kwargs are its constructor's (seed is passed where it takes one)."""
    if name not in CLASSES:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(CLASSES)}")
    cls = CLASSES[name]
    if "seed" in inspect.signature(cls).parameters:
        kwargs = {"seed": seed, **kwargs}
    return cls(**kwargs)


def ranks_only(name: str) -> bool:
    """True for baselines that rank items but predict no stars (top-N protocol only)."""
    return bool(getattr(CLASSES[name], "ranks_only", False))


def baseline_factories(names=BASELINES, seed: int = 0, autorec: dict | None = None, als: dict | None = None,
                       **params: dict) -> dict[str, Callable]:
    """name -> factory of a fresh model with its default hyperparameters (and any given: `autorec`,
    `als`, or params[name] = {..} for others)."""
    unknown = set(names) - set(CLASSES)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(CLASSES)}")
    given = {"als-mf": als or {}, "i-autorec": autorec or {}, **params}
    return {n: (lambda n=n: make_baseline(n, seed, **given.get(n, {}))) for n in names}
