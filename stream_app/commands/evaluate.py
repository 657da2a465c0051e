"""`recsys evaluate`: measure our model and the baselines on one protocol, print a table, write
JSON (`{"protocol": .., "systems": {NAME: {...}}}`, fold-in systems keyed by k) and a PNG."""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from stream_app.commands.common import (
    add_config_flags,
    add_data_flags,
    config_from_args,
    load_split_for,
    show_progress,
)
from stream_app.commands.datacheck import add_allow_other_data_flag, check_same_data
from stream_app.settings import add_setting_flags, settings_from_args

PROTOCOLS = ("warm", "foldin-users", "foldin-items", "prequential", "topn")


def register(sub):
    p = sub.add_parser("evaluate", help="evaluate models (warm, fold-in, prequential, top-N)")
    p.add_argument("--protocol", default="warm", choices=PROTOCOLS,
                   help="warm: rating error on the test split; foldin-users/foldin-items: error of held-out users or "
                        "items folded in from k ratings; prequential: predict each test rating, then absorb it; "
                        "topn: precision, recall and NDCG of top-N lists (default: warm)")
    p.add_argument("--artifact", default=None,
                   help="our trained model (default: ARTIFACTS_DIR/current); fold-in protocols train their "
                        "own unless given one trained without the held-out entities")
    p.add_argument("--no-model", action="store_true", help="baselines only (no model of ours)")
    p.add_argument("--baselines", default=None,
                   help="comma list of bias-only, als-mf, i-autorec, ease (top-N only; empty: none); default: "
                        "bias-only,als-mf,i-autorec, plus ease for topn")
    p.add_argument("--hyperparameters", default="validation", choices=("validation", "defaults"),
                   help="baselines' hyperparameters: chosen on a seeded 10%% validation split of the training "
                        "ratings (default), or the built-in defaults (rankers such as EASE are always tuned)")
    add_data_flags(p)
    add_allow_other_data_flag(p)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--png", default=None, help="fold-in: RMSE vs k; prequential: running RMSE")
    p.add_argument("--ks", default="1,3,5,10,20", help="fold-in protocols: revealed ratings per entity")
    p.add_argument("--retrain-ks", default="",
                   help="fold-in protocols: ks at which ALS is retrained with the revealed ratings (e.g. 1,5,20)")
    p.add_argument("--retrain-ours", action="store_true", help="fold-in: also retrain our model at --retrain-ks")
    p.add_argument("--folds", type=int, default=1,
                   help="fold-in protocols: disjoint draws of held-out entities, each training its own models")
    p.add_argument("--held-out", type=int, default=None,
                   help="fold-in protocols: held-out entities per fold (default 10%% of all users/items)")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="fold-in protocols: bootstrap replicates of the 95%% intervals of RMSE differences")
    p.add_argument("--chunk", type=int, default=1,
                   help="prequential: ratings predicted before absorbing them (1 = the protocol proper)")
    p.add_argument("--limit", type=int, default=None, help="prequential: stream only the first LIMIT test ratings")
    p.add_argument("--window", type=int, default=0,
                   help="prequential: our fold-in uses the last WINDOW ratings of an entity (0 = all)")
    p.add_argument("--top-n", type=int, default=10, help="topn: list length")
    p.add_argument("--autorec-epochs", type=int, default=None, help="I-AutoRec training epochs")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    add_config_flags(p)
    add_setting_flags(p, "data", "model")
    p.set_defaults(func=run)


def run(args) -> int:
    from stream_app.evaluation import protocols

    settings = settings_from_args(args)
    artifact = _artifact_path(args, settings)
    if artifact is not None:  # refuse a model of another dataset before loading any data
        check_same_data(_manifest(artifact), args.data, args.allow_other_data)
    split = load_split_for(args, settings)
    log = (lambda *a: None) if args.quiet else tqdm.write
    baselines = protocols.BaselineSet(
        protocols.default_baselines(args.protocol) if args.baselines is None else
        [n for n in args.baselines.split(",") if n], settings.seed, tune=args.hyperparameters == "validation",
        fixed={"i-autorec": {"epochs": args.autorec_epochs}} if args.autorec_epochs else {})
    if args.protocol.startswith("foldin"):
        rec = None if artifact is None else _load(artifact)
        train_ours = None if args.no_model else _trainer(args, settings)
        result = protocols.foldin(split, args.protocol.split("-")[1].rstrip("s"), _ints(args.ks), train_ours, rec,
                                  baselines, _ints(args.retrain_ks), args.retrain_ours, settings.seed, log,
                                  folds=args.folds, held_out=args.held_out, n_boot=args.bootstrap)
    else:
        rec = None if artifact is None else _load(artifact)
        if args.protocol == "warm":
            result = protocols.warm(split, rec, baselines, log=log)
            if rec is not None:  # top-level keys of our model, as before the side-by-side table
                result.update({"model_version": rec.model_version, **result["systems"]["aevec"]})
        elif args.protocol == "prequential":
            result = protocols.prequential(split, rec, baselines, chunk=args.chunk, limit=args.limit,
                                           window=args.window, log=log)
        else:
            result = protocols.topn(split, rec, baselines, n=args.top_n, log=log)
    result.update({"data": args.data, "split": split.name, "seed": settings.seed})
    print(format_table(result))
    if args.png and result["protocol"] in ("foldin-users", "foldin-items", "prequential"):
        protocols.plot(result, args.png)
        print(f"wrote {args.png}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def _artifact_path(args, settings):
    """Our model's artifact: --artifact, else ARTIFACTS_DIR (its current) except for fold-in protocols, which
    train their own; None with --no-model."""
    if args.no_model:
        return None
    if args.protocol.startswith("foldin"):
        return args.artifact
    return args.artifact or settings.artifacts_dir


def _manifest(path) -> dict:
    from stream_app.core.artifacts import read_manifest, resolve_artifact

    return read_manifest(resolve_artifact(path))


def _load(path):
    from stream_app.core.artifacts import load_artifact

    return load_artifact(path)


def _trainer(args, settings):
    """train(data) -> Recommender with the command's config (fold-in and retrain protocols)."""
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema

    config = config_from_args(args)

    def train(data):
        rec, _ = Trainer(config, FeatureSchema.fit(data), settings.device, show_progress(args.quiet)).fit(
            data, log=(lambda *a: None) if args.quiet else tqdm.write)
        return rec

    return train


def _ints(text: str) -> list[int]:
    return [int(k) for k in text.split(",") if k.strip()]


def format_table(result: dict) -> str:
    """The protocol's systems as a text table (fold-in: one row per k, one column per system)."""
    proto, systems = result["protocol"], result["systems"]
    if proto.startswith("foldin"):
        ks = result.get("ks") or sorted({int(k) for v in systems.values() for k in v})
        intervals = result.get("intervals", {})
        rows = [[k] + [_get(systems[s], k, "rmse") for s in systems] + [_interval(intervals[s], k) for s in intervals]
                for k in ks]
        table = _table(["k"] + [f"{s} rmse" for s in systems] + [f"ours - {s} [95% CI]" for s in intervals], rows)
        return table + (f"\n{result['intervals_about']}" if intervals else "")
    if proto == "topn":
        rows = [[s, m["precision"], m["recall"], m["ndcg"], m["users"]] for s, m in systems.items()]
        n = result.get("n", 10)
        return _table(["system", f"precision@{n}", f"recall@{n}", f"ndcg@{n}", "users"], rows)
    if proto == "prequential":
        rows = [[s, m["rmse"], m["mae"], m["n"], m["seconds"]] for s, m in systems.items()]
        return _table(["system", "running rmse", "mae", "n", "seconds"], rows)
    rows = [[s, m["rmse"], m["mae"], m.get("thumbs", {}).get("accuracy", float("nan")),
             m.get("thumbs", {}).get("auc", float("nan")), m["n"],
             m.get("train_seconds") if m.get("train_seconds") is not None else "-"] for s, m in systems.items()]
    return _table(["system", "rmse", "mae", "thumbs acc", "thumbs auc", "n", "train s"], rows)


def _interval(by_k: dict, k: int) -> str:
    from stream_app.evaluation.protocols import at_k

    m = at_k(by_k, k)
    return f"{m['diff']:+.4f} [{m['low']:+.4f}, {m['high']:+.4f}]" if m else "-"


def _get(by_k: dict, k: int, key: str):
    from stream_app.evaluation.protocols import at_k

    m = at_k(by_k, k)
    return m[key] if m else "-"


def _table(header: list[str], rows: list[list]) -> str:
    cells = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
