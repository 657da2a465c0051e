"""How much popularity top-N ranking should add: NDCG@10 against the popularity weight w, for our model
and the baselines, each ranked by predicted stars + w * ln(1 + the item's training ratings).

    python bench/topn_popularity.py --artifact model_artifacts/NAME [--data ml-100k] [--split u1]

The weight is then chosen without looking at the users it is measured on: the test users are split in
two halves (by user index parity); w is picked on one half and NDCG reported on the other, both ways.
Writes bench/results/topn/popularity.json and popularity.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)


def user_subset(data, keep: np.ndarray):
    rows = keep[data.user]
    return replace(data, user=data.user[rows], item=data.item[rows], rating=data.rating[rows], ts=data.ts[rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--artifact", required=True, help="our model, trained on the split's training ratings")
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--split", default="u1")
    p.add_argument("--baselines", default="bias-only,als-mf,i-autorec")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "topn"))
    args = p.parse_args(argv)

    import torch

    from stream_app.core.artifacts import load_artifact
    from stream_app.data.registry import load_split
    from stream_app.evaluation import protocols
    from stream_app.evaluation.plots import plot_lines
    from stream_app.evaluation.protocols.topn import (
        baseline_scorer,
        evaluate_topn,
        popularity_scorer,
        served_stars,
        with_popularity,
    )
    from stream_app.settings import Settings

    torch.set_num_threads(1)
    split = load_split(args.data, args.split, Settings.from_env())
    rec = load_artifact(args.artifact)
    stars = {"aevec": served_stars(rec)}
    factories = protocols.baseline_factories([n for n in args.baselines.split(",") if n])
    for name, make in factories.items():
        print(f"fitting {name}")
        stars[name] = baseline_scorer(make().fit(split.train))
    cached = {name: _memo(f) for name, f in stars.items()}  # one scoring per user, reused for every weight

    halves = {"even": np.arange(split.test.n_users) % 2 == 0}
    halves["odd"] = ~halves["even"]
    started = time.perf_counter()
    curves: dict[str, dict] = {}  # system -> half -> [ndcg per weight]
    for half, keep in halves.items():
        test = user_subset(split.test, keep)
        scorers = {f"{name}@{w}": with_popularity(f, split.train, w) for name, f in cached.items() for w in WEIGHTS}
        result = evaluate_topn(scorers, split.train, test)
        for name in cached:
            curves.setdefault(name, {})[half] = [result[f"{name}@{w}"]["ndcg"] for w in WEIGHTS]
    whole = evaluate_topn({f"{name}@{w}": with_popularity(f, split.train, w) for name, f in cached.items()
                           for w in WEIGHTS} | {"popularity": popularity_scorer(split.train)}, split.train, split.test)
    systems = {}
    for name, by_half in curves.items():
        picked = {h: WEIGHTS[int(np.argmax(v))] for h, v in by_half.items()}
        # weight picked on one half, NDCG measured on the other (both ways, averaged by users)
        other = {"even": "odd", "odd": "even"}
        crossed = [by_half[other[h]][WEIGHTS.index(w)] for h, w in picked.items()]
        n_users = {h: int(len({*split.test.user[halves[h][split.test.user]]})) for h in halves}
        systems[name] = {
            "ndcg_by_weight": {str(w): whole[f"{name}@{w}"]["ndcg"] for w in WEIGHTS},
            "precision_by_weight": {str(w): whole[f"{name}@{w}"]["precision"] for w in WEIGHTS},
            "weight_picked": picked, "ndcg_crossed": crossed,
            "ndcg_stars_only": whole[f"{name}@0.0"]["ndcg"],
            "halves_users": n_users,
        }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"data": args.data, "split": args.split, "artifact": str(args.artifact), "weights": list(WEIGHTS),
              "served_weight_default": _default_weight(), "popularity_ndcg": whole["popularity"]["ndcg"],
              "seconds": time.perf_counter() - started, "systems": systems}
    (out / "popularity.json").write_text(json.dumps(report, indent=2))
    series = {name: (list(WEIGHTS), [s["ndcg_by_weight"][str(w)] for w in WEIGHTS]) for name, s in systems.items()}
    series["popularity (no model)"] = (list(WEIGHTS), [report["popularity_ndcg"]] * len(WEIGHTS))
    plot_lines(series, out / "popularity.png", "popularity weight w", "NDCG@10",
               title=f"{args.data} {args.split}: top-10 ranked by stars + w ln(1 + ratings)")
    header = " ".join(f"w={w:<5}" for w in WEIGHTS)
    print(f"{'system':14s} {'stars only':>10s} {header}  picked (even/odd)  crossed")
    for name, s in systems.items():
        print(f"{name:14s} {s['ndcg_stars_only']:10.3f} " + " ".join(f"{s['ndcg_by_weight'][str(w)]:7.3f}"
                                                                    for w in WEIGHTS)
              + f"  {s['weight_picked']['even']}/{s['weight_picked']['odd']}  "
              + "/".join(f"{x:.3f}" for x in s["ndcg_crossed"]))
    print(f"popularity alone: NDCG {report['popularity_ndcg']:.3f}; wrote {out / 'popularity.json'}")
    return 0


def _memo(scorer):
    cache: dict[int, np.ndarray] = {}

    def scores(user: int) -> np.ndarray:
        if user not in cache:
            cache[user] = np.asarray(scorer(user), np.float64)
        return cache[user]

    return scores


def _default_weight() -> float:
    from stream_app.core.config import ModelConfig

    return ModelConfig().popularity_weight


if __name__ == "__main__":
    raise SystemExit(main())
