"""Baselines on the same data pipeline, each one file behind the `Baseline` interface (base.py):
bias-only (bias.py), biased MF by ALS with closed-form fold-in (als.py) and I-AutoRec (autorec.py).

`baseline_factories(names)` gives `name -> fresh unfitted model` for the protocols, so every
protocol fits its own copies on its own training data. A new baseline: one module with a class
implementing base.Baseline, plus one entry in `_FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable

from stream_app.baselines.als import ALSMF
from stream_app.baselines.autorec import IAutoRec
from stream_app.baselines.base import Baseline
from stream_app.baselines.bias import BiasOnly

BASELINES = ("bias-only", "als-mf", "i-autorec")

__all__ = ["ALSMF", "BASELINES", "Baseline", "BiasOnly", "IAutoRec", "baseline_factories"]


def baseline_factories(names=BASELINES, seed: int = 0, autorec: dict | None = None,
                       als: dict | None = None) -> dict[str, Callable]:
    known = {"bias-only": lambda: BiasOnly(),
             "als-mf": lambda: ALSMF(seed=seed, **(als or {})),
             "i-autorec": lambda: IAutoRec(seed=seed, **(autorec or {}))}
    unknown = set(names) - set(known)
    if unknown:
        raise ValueError(f"unknown baselines {sorted(unknown)}; known: {', '.join(known)}")
    return {n: known[n] for n in names}
