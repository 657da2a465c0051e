"""Accuracy benchmark: every protocol of METHOD.md on one split, our model beside the baselines and
two outside peers, in one run.

    python bench/accuracy.py [--quick] [--artifact DIR] [--data ml-100k] [--split u1 | --split u1,u2,u3,u4,u5]

- warm: aevec, bias-only, als-mf, i-autorec and scikit-surprise SVD (and SVD++ with --svdpp) (peers)
  on the test ratings;
- foldin-users / foldin-items: *-foldin systems at k = 1, 3, 5, 10, 20, and als-mf-retrain (plus
  aevec-retrain with --retrain-ours) at --retrain-ks;
- prequential: aevec, bias-only, als-mf and River's online BiasedMF (peer, `river.reco`) over the
  test ratings in time order, one rating at a time, each warmed up on the training ratings;
- topn: precision/recall/NDCG@10 on held-out ratings >= 4, EASE among the baselines.

Baseline hyperparameters are chosen on a seeded 10% validation split of each protocol's training
ratings (`--hyperparameters defaults` keeps the built-in ones; EASE is always tuned). Several
splits (`--split u1,u2,u3,u4,u5`: the 5-fold ML-100K protocol) run every protocol on each and add
the mean and spread (sample standard deviation) per system. Untimed data (ml-1m-ratings) skips the
time-ordered protocols (fold-in, prequential) with the reason in the JSON.

Our model: `--artifact DIR` reuses a trained artifact for warm/prequential/topn (it must be trained
on the same split's training ratings); otherwise one is trained here. The fold-in protocols need
models trained without the held-out entities: `--foldin-artifacts DIR` loads DIR/foldin-users and
DIR/foldin-items (DIR/SPLIT/... with several splits) when present (one fold only) and saves the ones
it trains there. `--quick` trains a tiny model of
ours (minutes on a CPU, not its real accuracy) and labels every result "quick".

Writes bench/results/accuracy.json (`{"quick", "data", "split", "protocols": {NAME: {"protocol",
"systems": {SYSTEM: {...}}}}}` for the first split; with several, also "per_split" and
"across_splits") and accuracy-foldin-users.png, accuracy-foldin-items.png, accuracy-prequential.png
(suffixed -SPLIT with several splits). Peers need `pip install -e '.[bench]'`; a missing one is skipped and
reported as such.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream_app.commands.evaluate import format_table  # noqa: E402
from stream_app.errors import RecsysError  # noqa: E402
from stream_app.evaluation import protocols  # noqa: E402

PROTOCOLS = ("warm", "foldin-users", "foldin-items", "prequential", "topn")
SUMMARY_COLUMNS = ("warm rmse", "prequential rmse", "ndcg@10", "users k=1", "users k=5", "users k=20",
                   "items k=1", "items k=5", "items k=20")
# Our model in --quick runs: small and short, so that the whole bench fits in minutes on a CPU.
QUICK_CONFIG = dict(rounds=4, steps_per_round=30, n_dim=16, k_samples=16, hidden=64, predictor_hidden=64)


# ---- outside peers -----------------------------------------------------------------------------
class SurpriseSVD:
    """scikit-surprise SVD (Funk-style biased MF by SGD) with its default hyperparameters; `algo="SVDpp"`:
    its SVD++ (implicit feedback of which items each user rated; slow: minutes on ML-100K, much more on ML-1M).
    Library defaults, not tuned here: an outside anchor for our re-implementations."""

    name = "surprise-svd"

    def __init__(self, seed: int = 0, algo: str = "SVD"):
        self.seed, self.algo_name = seed, algo
        self.name = {"SVD": "surprise-svd", "SVDpp": "surprise-svdpp"}[algo]

    def fit(self, train):
        import tempfile

        import surprise
        from surprise import Dataset, Reader

        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:  # surprise reads files (or pandas, not installed here)
            path = Path(tmp) / "ratings.tsv"
            path.write_text("".join(f"{u}\t{i}\t{r:g}\n" for u, i, r in zip(train.user.tolist(), train.item.tolist(),
                                                                            train.rating.tolist(), strict=True)))
            reader = Reader(line_format="user item rating", sep="\t", rating_scale=train.rating_scale)
            trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
        self.algo = getattr(surprise, self.algo_name)(random_state=self.seed).fit(trainset)
        self.train_seconds = time.perf_counter() - started
        return self

    def predict(self, user, item):
        return np.array([self.algo.predict(str(u), str(i)).est for u, i in zip(user, item, strict=True)])


class RiverBiasedMF:
    """River's online BiasedMF (`river.reco`), settings of River's MovieLens 100K example; warmed up
    with one pass over the training ratings in time order, then predict-then-learn on the stream."""

    name = "river-biasedmf"

    def __init__(self, train, seed: int = 0):
        from river import optim, reco

        self.model = reco.BiasedMF(n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                                   weight_initializer=optim.initializers.Zeros(),
                                   latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73 + seed),
                                   l2_bias=0.0, l2_latent=0.0)
        self.scale = train.rating_scale
        started = time.perf_counter()
        for j in train.time_order():
            self.model.learn_one(user=int(train.user[j]), item=int(train.item[j]), y=float(train.rating[j]))
        self.train_seconds = time.perf_counter() - started

    def predict(self, u, i, ts):
        return np.clip([self.model.predict_one(user=int(a), item=int(b)) for a, b in zip(u, i, strict=True)],
                       *self.scale)

    def update(self, u, i, r, t):
        self.model.learn_one(user=u, item=i, y=r)


def _peer_available(module: str) -> str | None:
    try:
        __import__(module)
    except ImportError as exc:
        return f"not installed ({exc}); pip install -e '.[bench]'"
    return None


# ---- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny training config for our model; results labelled quick")
    p.add_argument("--artifact", default=None, help="reuse this trained model of ours (warm, prequential, topn)")
    p.add_argument("--foldin-artifacts", default=None, help="folder of fold-in models: loaded if there, else saved")
    p.add_argument("--config", default=None, help="JSON ModelConfig for models trained here")
    p.add_argument("--data", default="ml-100k")
    p.add_argument("--split", default="u1", help="a split, or a comma list (e.g. u1,u2,u3,u4,u5): mean and spread")
    p.add_argument("--hyperparameters", default="validation", choices=("validation", "defaults"),
                   help="baselines: chosen on a validation split of the training ratings, or built-in defaults")
    p.add_argument("--folds", type=int, default=1, help="fold-in: disjoint folds of held-out entities")
    p.add_argument("--held-out", type=int, default=None, help="fold-in: held-out entities per fold (default 10%%)")
    p.add_argument("--bootstrap", type=int, default=1000, help="fold-in: bootstrap replicates of the intervals")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
    p.add_argument("--no-model", action="store_true", help="baselines and peers only (no model of ours)")
    p.add_argument("--baselines", default=None, help="comma list: run only these of each protocol's baselines")
    p.add_argument("--svdpp", action="store_true", help="warm: also scikit-surprise SVD++ (slow) as an outside peer")
    p.add_argument("--ks", default="1,3,5,10,20")
    p.add_argument("--retrain-ks", default="1,5,20")
    p.add_argument("--retrain-ours", action="store_true", help="also retrain our model at --retrain-ks")
    p.add_argument("--limit", type=int, default=None, help="prequential: first LIMIT test ratings only")
    p.add_argument("--chunk", type=int, default=1, help="prequential: 1 = one rating at a time (the protocol)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the bench machine is shared)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    import torch

    from stream_app.core.artifacts import load_artifact
    from stream_app.core.config import ModelConfig
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.data.registry import load_split
    from stream_app.settings import Settings

    torch.set_num_threads(args.threads)
    started_all = time.perf_counter()
    names = [n for n in args.protocols.split(",") if n]
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise SystemExit(f"unknown protocols {unknown}; known: {', '.join(PROTOCOLS)}")
    if args.artifact and "," in args.split:
        raise SystemExit("--artifact is trained on one split's training ratings; give one --split with it")
    base = ModelConfig.from_file(args.config).to_dict() if args.config else ModelConfig().to_dict()
    if args.quick:
        base.update(QUICK_CONFIG)
    base["seed"] = args.seed
    config = ModelConfig.from_dict(base)
    log = print

    def train_ours(data):
        log(f"training aevec on {len(data)} ratings ({'quick' if args.quick else 'full'} config)")
        rec, _ = Trainer(config, FeatureSchema.fit(data), args.device, progress=False).fit(data, log=lambda *a: None)
        return rec

    def baselines(names):
        chosen = names if args.baselines is None else [n for n in names if n in args.baselines.split(",")]
        return protocols.BaselineSet(chosen, args.seed, tune=args.hyperparameters == "validation")

    skipped = {}
    for module, peer in (("surprise", "surprise-svd"), ("river", "river-biasedmf")):
        why = _peer_available(module)
        if why:
            skipped[peer] = why
            log(f"skipping {peer}: {why}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split_names = [n for n in args.split.split(",") if n]
    per_split, ours = {}, {"config": config.to_dict()}
    for split_name in split_names:
        split = load_split(args.data, split_name, Settings.from_env(), seed=args.seed)
        suffix = f"-{split.name}" if len(split_names) > 1 else ""
        rec = None
        if set(names) & {"warm", "prequential", "topn"} and not args.no_model:
            if args.artifact:
                rec = load_artifact(args.artifact)
                ours.update(artifact=str(args.artifact), model_version=rec.model_version)
            else:
                t0 = time.perf_counter()
                rec = train_ours(split.train)
                ours.setdefault("train_seconds", {})[split.name] = time.perf_counter() - t0
        results = per_split[split.name] = {}
        for name in names:
            t0 = time.perf_counter()
            log(f"== {name} on {split.name}")
            try:
                result = _run(name, split, rec, args, baselines, train_ours, skipped, log)
            except RecsysError as exc:  # e.g. a time-ordered protocol on untimed data
                log(f"skipping {name}: {exc}")
                results[name] = {"protocol": name, "skipped": str(exc), "systems": {}}
                continue
            result["quick"] = args.quick
            result["seconds"] = time.perf_counter() - t0
            results[name] = result
            print(("[QUICK: tiny model of ours] " if args.quick else "") + f"{name} on {args.data} {split.name}")
            print(format_table(result))
            if name.startswith("foldin") or name == "prequential":
                protocols.plot(result, out / f"accuracy-{name}{suffix}.png")
            _write(out / "accuracy.json", args, split_names, ours, skipped, per_split, started_all)
        print(summary(results, args.quick))
    if len(per_split) > 1:
        print(f"mean and spread over {', '.join(per_split)}")
        print(spread_table(across_splits(per_split)))
    print(f"wrote {out / 'accuracy.json'}")
    return 0


def _run(name, split, rec, args, baselines, train_ours, skipped, log) -> dict:
    from stream_app.core.artifacts import load_artifact, save_artifact

    if name == "warm":
        algos = ("SVD", "SVDpp") if args.svdpp else ("SVD",)
        peers = {} if "surprise-svd" in skipped else {
            f"surprise-{a.lower()}": (lambda a=a: SurpriseSVD(args.seed, a)) for a in algos}
        return protocols.warm(split, rec, baselines(protocols.BASELINES), peers, log=log)
    if name.startswith("foldin"):
        side = name.split("-")[1].rstrip("s")
        several = "," in args.split
        folder = Path(args.foldin_artifacts) / (f"{split.name}/{name}" if several else name) \
            if args.foldin_artifacts else None
        frozen = load_artifact(folder) if folder is not None and folder.exists() and args.folds == 1 else None
        trained = {}

        def train_and_keep(data, trained=trained):
            model = train_ours(data)
            trained.setdefault("first", model)
            return model

        result = protocols.foldin(split, side, [int(k) for k in args.ks.split(",")],
                                  None if args.no_model else train_and_keep, frozen,
                                  baselines(protocols.BASELINES), [int(k) for k in args.retrain_ks.split(",") if k],
                                  args.retrain_ours, args.seed, log, folds=args.folds, held_out=args.held_out,
                                  n_boot=args.bootstrap)
        if folder is not None and frozen is None and "first" in trained and args.folds == 1:
            save_artifact(trained["first"], folder, data_name=f"{args.data}:{split.name}:{name}")
        return result
    if name == "prequential":
        peers = [] if "river-biasedmf" in skipped else [RiverBiasedMF(split.train, args.seed)]
        result = protocols.prequential(split, rec, baselines=baselines(("bias-only", "als-mf")), peers=peers,
                                       chunk=args.chunk, limit=args.limit, log=log)
        for peer in peers:
            result["systems"][peer.name]["warmup_seconds"] = peer.train_seconds
        return result
    return protocols.topn(split, rec, baselines(protocols.TOPN_BASELINES), log=log)


def _write(path, args, split_names, ours, skipped, per_split, started_all) -> None:
    import torch

    first = next(iter(per_split))
    payload = {"quick": args.quick, "label": "quick (tiny model of ours)" if args.quick else "full",
               "data": args.data, "split": first, "seed": args.seed, "hyperparameters": args.hyperparameters,
               "aevec": ours, "peers_skipped": skipped,
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
               "seconds": time.perf_counter() - started_all, "protocols": per_split[first]}
    if len(split_names) > 1:
        payload.update(splits=split_names, per_split=per_split, across_splits=across_splits(per_split))
    path.write_text(json.dumps(payload, indent=1))


def summary(results: dict, quick: bool) -> str:
    """One row per system: warm RMSE, prequential RMSE, NDCG@10, fold-in RMSE at k=1/5/20."""
    rows = summary_rows(results)
    columns = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows.values())]
    from stream_app.commands.evaluate import _table

    table = _table(["system", *columns], [[s, *[r.get(c, "-") for c in columns]] for s, r in rows.items()])
    return ("QUICK RUN (tiny model of ours; baselines and peers are full)\n" if quick else "") + table


def summary_rows(results: dict) -> dict[str, dict]:
    """system -> {column: value} of `summary`."""
    rows: dict[str, dict] = {}
    for proto, res in results.items():
        for system, m in res["systems"].items():
            if proto.startswith("foldin"):
                side = "users" if proto.endswith("users") else "items"
                for k in (1, 5, 20):
                    mk = protocols.at_k(m, k)
                    if mk:
                        rows.setdefault(system, {})[f"{side} k={k}"] = mk["rmse"]
            elif proto == "topn":
                rows.setdefault(system, {})["ndcg@10"] = m["ndcg"]
            else:
                rows.setdefault(system, {})[f"{proto} rmse"] = m["rmse"]
    return rows


def across_splits(per_split: dict) -> dict:
    """system -> column -> {"mean", "std" (sample, ddof 1), "n"} over the splits that have it."""
    values: dict[str, dict[str, list]] = {}
    for results in per_split.values():
        for system, row in summary_rows(results).items():
            for column, v in row.items():
                values.setdefault(system, {}).setdefault(column, []).append(v)
    return {system: {c: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                         "n": len(v)} for c, v in cols.items()} for system, cols in values.items()}


def spread_table(stats: dict) -> str:
    from stream_app.commands.evaluate import _table

    columns = sorted({c for cols in stats.values() for c in cols}, key=SUMMARY_COLUMNS.index)
    return _table(["system", *columns], [[s, *[f"{cols[c]['mean']:.4f} ± {cols[c]['std']:.4f}" if c in cols else "-"
                                               for c in columns]] for s, cols in stats.items()])


if __name__ == "__main__":
    raise SystemExit(main())
