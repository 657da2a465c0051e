"""The evaluation protocols of METHOD.md, one module each, shared by `recsys evaluate` and bench/.

Every protocol returns `{"protocol": NAME, "systems": {SYSTEM: {...metrics}}, ...}`; the fold-in
protocols key each system's metrics by k (revealed ratings per held-out entity). System names:
bias-only, als-mf, i-autorec, aevec (ours); fold-in variants bias-only-foldin, als-mf-foldin,
als-mf-retrain, i-autorec-foldin, aevec-foldin, aevec-retrain; topn adds popularity (most rated
items), the non-personalised reference. Outside peers (bench) add theirs.

Our model is passed in as a trained Recommender (or a `train(data) -> Recommender` callable where
the protocol needs a model trained on other data: fold-in and retrain); baselines are factories
`name -> fresh unfitted model` (stream_app.baselines.baseline_factories), so every protocol fits
its own copies on its own training data. A new protocol is one module here plus one entry in
PROTOCOLS.
"""

from __future__ import annotations

from stream_app.baselines import BASELINES, TOPN_BASELINES, baseline_factories
from stream_app.evaluation.protocols.foldin import FOLDIN_KS, at_k, foldin
from stream_app.evaluation.protocols.prequential import prequential
from stream_app.evaluation.protocols.topn import topn
from stream_app.evaluation.protocols.warm import warm
from stream_app.evaluation.splits import concat
from stream_app.evaluation.tuning import BaselineSet

PROTOCOLS = ("warm", "foldin-users", "foldin-items", "prequential", "topn")


def plot(result: dict, out) -> None:
    """A protocol's PNG (stream_app.evaluation.plots; matplotlib is imported only here)."""
    from stream_app.evaluation.plots import plot_protocol

    plot_protocol(result, out)

__all__ = ["BASELINES", "FOLDIN_KS", "PROTOCOLS", "TOPN_BASELINES", "BaselineSet", "at_k", "baseline_factories",
           "concat", "default_baselines", "foldin", "plot", "prequential", "topn", "warm"]


def default_baselines(protocol: str) -> tuple[str, ...]:
    """The baselines a protocol runs unless told otherwise: the rating predictors, plus rankers (EASE) in topn."""
    return TOPN_BASELINES if protocol == "topn" else BASELINES
