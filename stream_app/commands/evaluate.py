"""`recsys evaluate`: measure a model on a protocol, print a table, write JSON (and a PNG)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm.auto import tqdm

from stream_app.commands.common import add_config_flags, add_data_flags, config_from_args, load_split_for
from stream_app.settings import add_setting_flags, settings_from_args

PROTOCOLS = ("warm", "foldin-users", "foldin-items")


def register(sub):
    p = sub.add_parser("evaluate", help="evaluate a model (warm RMSE, fold-in curves)")
    p.add_argument("--protocol", default="warm", choices=PROTOCOLS)
    p.add_argument("--artifact", default=None,
                   help="warm: the artifact folder (default: ARTIFACTS_DIR/current)")
    add_data_flags(p)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--png", default=None, help="fold-in protocols: plot RMSE vs k here")
    p.add_argument("--ks", default="1,3,5,10,20", help="fold-in protocols: revealed ratings per entity")
    p.add_argument("--quiet", action="store_true")
    add_config_flags(p)
    add_setting_flags(p, "data", "model")
    p.set_defaults(func=run)


def run(args) -> int:
    settings = settings_from_args(args)
    split = load_split_for(args, settings)
    if args.protocol == "warm":
        result = _warm(args, settings, split)
    else:
        result = _foldin(args, settings, split, args.protocol.split("-")[1].rstrip("s"))
    result.update({"data": args.data, "split": split.name})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


def _warm(args, settings, split) -> dict:
    from stream_app.core.artifacts import load_artifact
    from stream_app.evaluation import evaluate_warm

    rec = load_artifact(args.artifact or settings.artifacts_dir)
    metrics = evaluate_warm(rec, split.test)
    print(_table(["system", "rmse", "mae", "n"], [[rec.model_version, metrics["rmse"], metrics["mae"],
                                                   metrics["n"]]]))
    return {"protocol": "warm", "model_version": rec.model_version, **metrics,
            "systems": {"aevec": metrics}}


def _foldin(args, settings, split, side: str) -> dict:
    from stream_app.baselines import ALSMF, BiasOnly
    from stream_app.core.training import Trainer
    from stream_app.data.features import FeatureSchema
    from stream_app.evaluation import (
        baseline_foldin_predictions,
        foldin_predictions,
        hold_out,
        rating_metrics,
        reveal,
    )
    from stream_app.plots import plot_lines

    ks = [int(k) for k in args.ks.split(",")]
    config = config_from_args(args)
    held = hold_out(split.train, side, seed=settings.seed)
    print(f"fold-in {side}s: {len(held.entities)} held out ({len(held.held)} ratings); "
          f"training on the other {len(held.train)} ratings")
    started = time.perf_counter()
    rec, _ = Trainer(config, FeatureSchema.fit(held.train), settings.device, not args.quiet).fit(
        held.train, log=(lambda *a: None) if args.quiet else tqdm.write)
    train_seconds = time.perf_counter() - started
    baselines = {"bias-only": BiasOnly().fit(held.train), "als-foldin": ALSMF(seed=settings.seed).fit(held.train)}
    systems = {"aevec-foldin": {}, **{name: {} for name in baselines}}
    for k in ks:
        revealed, rest = reveal(held, k)
        truth = held.held.rating[rest]
        systems["aevec-foldin"][k] = rating_metrics(foldin_predictions(rec, held, revealed, rest), truth)
        for name, model in baselines.items():
            systems[name][k] = rating_metrics(baseline_foldin_predictions(model, held, revealed, rest), truth)
    rows = [[k] + [systems[s][k]["rmse"] for s in systems] + [systems["aevec-foldin"][k]["n"]] for k in ks]
    print(_table(["k"] + [f"{s} rmse" for s in systems] + ["n"], rows))
    if args.png:
        plot_lines({s: (ks, [systems[s][k]["rmse"] for k in ks]) for s in systems}, args.png,
                   "revealed ratings per held-out " + side, "RMSE on the rest", f"fold-in of new {side}s")
    return {"protocol": f"foldin-{side}s", "held_out": len(held.entities),
            "train_seconds": {"aevec": train_seconds, **{n: m.train_seconds for n, m in baselines.items()}},
            "systems": systems}


def _table(header: list[str], rows: list[list]) -> str:
    cells = [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
