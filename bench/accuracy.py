"""Accuracy benchmark: every protocol of METHOD.md on one split, our model beside the baselines and
two outside peers, in one run.

    python bench/accuracy.py [--quick] [--artifact DIR] [--data ml-100k] [--split u1]

- warm: aevec, bias-only, als-mf, i-autorec and scikit-surprise SVD (peer) on the test ratings;
- foldin-users / foldin-items: *-foldin systems at k = 1, 3, 5, 10, 20, and als-mf-retrain (plus
  aevec-retrain with --retrain-ours) at --retrain-ks;
- prequential: aevec, bias-only, als-mf and River's online BiasedMF (peer, `river.reco`) over the
  test ratings in time order, one rating at a time, each warmed up on the training ratings;
- topn: precision/recall/NDCG@10 on held-out ratings >= 4.

Our model: `--artifact DIR` reuses a trained artifact for warm/prequential/topn (it must be trained
on the same split's training ratings); otherwise one is trained here. The fold-in protocols need
models trained without the held-out entities: `--foldin-artifacts DIR` loads DIR/foldin-users and
DIR/foldin-items when present and saves the ones it trains there. `--quick` trains a tiny model of
ours (minutes on a CPU, not its real accuracy) and labels every result "quick".

Writes bench/results/accuracy.json (`{"quick", "data", "split", "protocols": {NAME: {"protocol",
"systems": {SYSTEM: {...}}}}}`) and accuracy-foldin-users.png, accuracy-foldin-items.png,
accuracy-prequential.png. Peers need `pip install -e '.[bench]'`; a missing one is skipped and
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
from stream_app.evaluation import protocols  # noqa: E402

PROTOCOLS = ("warm", "foldin-users", "foldin-items", "prequential", "topn")
# Our model in --quick runs: small and short, so that the whole bench fits in minutes on a CPU.
QUICK_CONFIG = dict(rounds=4, steps_per_round=30, n_dim=16, k_samples=16, hidden=64, predictor_hidden=64)


# ---- outside peers -----------------------------------------------------------------------------
class SurpriseSVD:
    """scikit-surprise SVD (Funk-style biased MF by SGD) with its default hyperparameters."""

    name = "surprise-svd"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train):
        import tempfile

        from surprise import SVD, Dataset, Reader

        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:  # surprise reads files (or pandas, not installed here)
            path = Path(tmp) / "ratings.tsv"
            path.write_text("".join(f"{u}\t{i}\t{r:g}\n" for u, i, r in zip(train.user.tolist(), train.item.tolist(),
                                                                            train.rating.tolist(), strict=True)))
            reader = Reader(line_format="user item rating", sep="\t", rating_scale=train.rating_scale)
            trainset = Dataset.load_from_file(str(path), reader).build_full_trainset()
        self.algo = SVD(random_state=self.seed).fit(trainset)
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
    p.add_argument("--split", default="u1")
    p.add_argument("--protocols", default=",".join(PROTOCOLS))
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

    from stream_app.core.artifacts import load_artifact, save_artifact
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
    split = load_split(args.data, args.split, Settings.from_env(), seed=args.seed)
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

    baselines = protocols.baseline_factories(seed=args.seed)
    skipped = {}
    for module, peer in (("surprise", "surprise-svd"), ("river", "river-biasedmf")):
        why = _peer_available(module)
        if why:
            skipped[peer] = why
            log(f"skipping {peer}: {why}")

    rec, ours = None, {"config": config.to_dict()}
    if set(names) & {"warm", "prequential", "topn"}:
        if args.artifact:
            rec = load_artifact(args.artifact)
            ours.update(artifact=str(args.artifact), model_version=rec.model_version)
        else:
            t0 = time.perf_counter()
            rec = train_ours(split.train)
            ours["train_seconds"] = time.perf_counter() - t0

    results = {}
    for name in names:
        t0 = time.perf_counter()
        log(f"== {name}")
        if name == "warm":
            peers = {} if "surprise-svd" in skipped else {"surprise-svd": lambda: SurpriseSVD(args.seed)}
            result = protocols.warm(split, rec, baselines, peers, log=log)
        elif name.startswith("foldin"):
            side = name.split("-")[1].rstrip("s")
            folder = Path(args.foldin_artifacts) / name if args.foldin_artifacts else None
            frozen = load_artifact(folder) if folder is not None and folder.exists() else None
            trained = {}

            def train_and_keep(data, trained=trained):
                model = train_ours(data)
                trained.setdefault("first", model)
                return model

            result = protocols.foldin(split, side, [int(k) for k in args.ks.split(",")], train_and_keep, frozen,
                                      baselines, [int(k) for k in args.retrain_ks.split(",") if k],
                                      args.retrain_ours, args.seed, log)
            if folder is not None and frozen is None and "first" in trained:
                save_artifact(trained["first"], folder, data_name=f"{args.data}:{split.name}:{name}")
        elif name == "prequential":
            peers = [] if "river-biasedmf" in skipped else [RiverBiasedMF(split.train, args.seed)]
            result = protocols.prequential(split, rec, baselines={k: baselines[k] for k in ("bias-only", "als-mf")},
                                           peers=peers, chunk=args.chunk, limit=args.limit, log=log)
            for peer in peers:
                result["systems"][peer.name]["warmup_seconds"] = peer.train_seconds
        else:
            result = protocols.topn(split, rec, baselines, log=log)
        result["quick"] = args.quick
        result["seconds"] = time.perf_counter() - t0
        results[name] = result
        print(("[QUICK: tiny model of ours] " if args.quick else "") + f"{name} on {args.data} {split.name}")
        print(format_table(result))
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        if name.startswith("foldin") or name == "prequential":
            protocols.plot(result, out / f"accuracy-{name}.png")
        _write(out / "accuracy.json", args, split, ours, skipped, results, started_all)
    print(summary(results, args.quick))
    print(f"wrote {Path(args.out) / 'accuracy.json'}")
    return 0


def _write(path, args, split, ours, skipped, results, started_all) -> None:
    import torch

    payload = {"quick": args.quick, "label": "quick (tiny model of ours)" if args.quick else "full",
               "data": args.data, "split": split.name, "seed": args.seed, "aevec": ours,
               "peers_skipped": skipped,
               "environment": {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_threads": torch.get_num_threads(), "machine": platform.machine()},
               "seconds": time.perf_counter() - started_all, "protocols": results}
    path.write_text(json.dumps(payload, indent=1))


def summary(results: dict, quick: bool) -> str:
    """One row per system: warm RMSE, prequential RMSE, NDCG@10, fold-in RMSE at k=1/5/20."""
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
    columns = [c for c in ("warm rmse", "prequential rmse", "ndcg@10", "users k=1", "users k=5", "users k=20",
                           "items k=1", "items k=5", "items k=20") if any(c in r for r in rows.values())]
    from stream_app.commands.evaluate import _table

    table = _table(["system", *columns], [[s, *[r.get(c, "-") for c in columns]] for s, r in rows.items()])
    return ("QUICK RUN (tiny model of ours; baselines and peers are full)\n" if quick else "") + table


if __name__ == "__main__":
    raise SystemExit(main())
