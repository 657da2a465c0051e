"""`recsys train`: train the autoencoders and predictor, write a versioned artifact.

`train_model()` and `add_training_flags()` are shared with `recsys retrain` (commands/retrain.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from stream_app.commands.common import (
    add_config_flags,
    add_data_flags,
    config_from_args,
    load_split_for,
    show_progress,
)
from stream_app.settings import add_setting_flags, settings_from_args


def register(sub):
    p = sub.add_parser("train", help="train a model and write an artifact folder")
    p.add_argument("--out", default=None, help="artifact folder (default ARTIFACTS_DIR/<data>-<split>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint of an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an existing artifact folder")
    add_training_flags(p)
    p.set_defaults(func=run)


def add_training_flags(p) -> None:
    """Data, hyperparameter, promotion and settings flags of every command that trains a model."""
    add_data_flags(p)
    p.add_argument("--config", default=None, help="JSON file of model hyperparameters (flags override it)")
    p.add_argument("--no-promote", dest="promote", action="store_false",
                   help="do not point ARTIFACTS_DIR/current at the new model")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar (there is none anyway when stderr is not a terminal)")
    add_config_flags(p)
    add_setting_flags(p, "data", "model")


def default_out(args, settings, split_name: str) -> Path:
    return Path(settings.artifacts_dir) / f"{args.data}-{split_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def train_model(args, settings, out: Path | None = None, resume: bool = False, overwrite: bool = False,
                beside_serving: bool = False) -> tuple[Path, dict]:
    """Train on the data named by args, write the artifact (default name under ARTIFACTS_DIR), promote it
    (atomic rewrite of ARTIFACTS_DIR/current) when args.promote and it lies in ARTIFACTS_DIR.
    beside_serving: leave a core to the workers when choosing torch threads (settings.torch_threads = 0)."""
    from stream_app.core.artifacts import save_artifact, set_current
    from stream_app.core.bulk import predict_dataset
    from stream_app.core.training import Trainer, set_training_threads
    from stream_app.data.features import FeatureSchema
    from stream_app.evaluation import rating_metrics
    from stream_app.evaluation.plots import plot_training
    from stream_app.evaluation.protocols.topn import calibrate_popularity

    config = config_from_args(args)
    split = load_split_for(args, settings)
    check_trainable(split.train, args.data)
    out = Path(out) if out else default_out(args, settings, split.name)
    checkpoint = out.with_name(out.name + ".checkpoint") / "checkpoint.pt"
    print(f"training on {args.data} ({split.name}): {len(split.train)} ratings, "
          f"{split.train.n_users} users, {split.train.n_items} items; test {len(split.test)}")
    print(f"config: {json.dumps(config.to_dict())}")
    schema = FeatureSchema.fit(split.train)
    threads = set_training_threads(settings.torch_threads, leave=1 if beside_serving else 0)
    started = time.perf_counter()
    trainer = Trainer(config, schema, device=settings.device, progress=show_progress(args.quiet))
    rec, report = trainer.fit(split.train, checkpoint=checkpoint, resume=resume, calibrate=calibrate_popularity)
    report["train_seconds"] = time.perf_counter() - started
    chosen = [f"{name} {report[name]['chosen']:g}" for name in ("foldin_prior", "popularity_weight") if name in report]
    if chosen:
        print("chosen on the validation ratings: " + ", ".join(chosen))
    report["device"] = str(trainer.device)
    report["torch_threads"] = threads
    if len(split.test):
        report["test"] = rating_metrics(predict_dataset(rec, split.test), split.test.rating)
        print(f"test rmse {report['test']['rmse']:.4f}  mae {report['test']['mae']:.4f}  n {report['test']['n']}")
    save_artifact(rec, out, metrics=report, data_name=f"{args.data}:{split.name}", overwrite=overwrite)
    (out / "training_history.json").write_text(json.dumps(report, indent=1))
    plot_training(report, out / "loss_curves.png", title=f"{out.name}")
    shutil.rmtree(checkpoint.parent, ignore_errors=True)
    report["promoted"] = bool(args.promote and out.parent.resolve() == Path(settings.artifacts_dir).resolve())
    if report["promoted"]:
        set_current(out.parent, out.name)
    report["model_version"] = rec.model_version
    return out, report


def check_trainable(data, data_name: str) -> None:
    """UsageError unless some rating's user and item both have another rating to encode them from (the rule
    of Trainer._eligible_rows): with none there is nothing to train on."""
    import numpy as np

    from stream_app.errors import UsageError

    users = np.bincount(data.user, minlength=data.n_users)[data.user] >= 2
    items = np.bincount(data.item, minlength=data.n_items)[data.item] >= 2
    if not (users & items).any():
        more = ("--synthetic-users and --synthetic-items (e.g. 50 each)" if data_name == "synthetic"
                else "a bigger dataset")
        raise UsageError(f"too little data to train on ({len(data)} ratings, {data.n_users} users, {data.n_items} "
                         f"items: no rating whose user and item both have another rating); use {more}")


def run(args) -> int:
    settings = settings_from_args(args)
    out, report = train_model(args, settings, out=args.out, resume=args.resume, overwrite=args.overwrite)
    print(f"artifact written to {out} (trained in {report['train_seconds']:.0f} s); loss curves in "
          f"{out / 'loss_curves.png'}" + ("; now current" if report["promoted"] else ""))
    return 0
